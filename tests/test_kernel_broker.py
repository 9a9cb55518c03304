"""Issue 23 end to end: the real CLIs (Claude Code, Codex, Pi), driven by the scripted model in a
real kernel, push through the credential broker to a stand-in github.com (``git http-backend`` over TLS
with basic auth, on loopback under its real name through ``egress_resolve``).

The agent's own branch lands without asking; a push to a branch that is not the session's asks,
and lands once a person approves it on the card; a force push of main is refused in git's words
plus ours; the credential is in no event, cell or store byte; with the broker cleared the same
push fails for want of a credential, as before brokering existed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.store.redact import variants

from .conftest import require_cli
from .git_standin import GitStandIn
from .test_kernel_control import run_and_answer, upstreams

TOKEN = "ghp_kernelE2E0123456789abcdefSECRET"
REPO = "acme/app.git"
IDENTITY = "-c user.name=Agent -c user.email=agent@example.com"


def shell(command: str) -> dict:
    return {"tool_calls": [{"action": "shell", "command": command}]}


SCENARIO = {
    "rules": [
        {
            "match": "push a branch",
            "steps": [
                {"text": "Pushing.", **shell(
                    f"git clone -q https://github.com/{REPO} app && cd app && "
                    "git checkout -q -b agent/e2e && echo hi > e2e.txt && git add e2e.txt && "
                    f"git {IDENTITY} commit -q -m e2e && git push origin agent/e2e 2>&1; "
                    "echo PUSH_EXIT=$?"
                )},
                {"text": "Pushed."},
            ],
        },
        {
            "match": "print the token",
            "steps": [
                {"text": "Printing.", **shell(f"echo {TOKEN}")},
                {"text": "Printed."},
            ],
        },
        {
            "match": "push feature",
            "steps": [
                {"text": "Pushing feature.", **shell(
                    "cd app && git push origin HEAD:feature 2>&1; echo FEATURE_EXIT=$?"
                )},
                {"text": "Pushed feature."},
            ],
        },
        {
            "match": "force main",
            "steps": [
                {"text": "Forcing.", **shell(
                    "cd app && git checkout -q --orphan rw && "
                    f"git {IDENTITY} commit -q -m rw && git push -f origin rw:main 2>&1; "
                    "echo FORCE_EXIT=$?"
                )},
                {"text": "Tried."},
            ],
        },
        {
            "match": "without the broker",
            "steps": [
                {"text": "Pushing again.", **shell(
                    "cd app && git -c http.sslCAInfo=../standin-ca.pem push origin "
                    "HEAD:refs/heads/agent/nobroker 2>&1; echo NOBROKER_EXIT=$?"
                )},
                {"text": "Tried again."},
            ],
        },
    ]
}  # fmt: skip


@pytest.fixture
def standin(tmp_path: Path):
    root = tmp_path / "server"
    root.mkdir()
    with GitStandIn(root, "github.com", "x-access-token", TOKEN) as server:
        repo = server.bare(REPO)
        subprocess.run(["git", "-C", str(repo), "branch", "feature", "main"], check=True)
        yield server


@pytest.mark.parametrize("harness", ["claude", "codex", "pi"])
def test_an_agent_pushes_its_branch_through_the_broker_and_cannot_force_main(
    harness, tmp_path, workdir, start_kernel, standin
):
    require_cli(harness)
    model = FakeModelServer(Scenario.from_dict(SCENARIO))
    model.start_in_thread()
    try:
        kernel = start_kernel(
            workdir,
            **upstreams(
                model,
                OMNIKERNEL_HARNESS=harness,
                OMNIKERNEL_AUTO_APPROVE="1",  # answers the shell commands' default ask only
                OMNIKERNEL_EGRESS_RESOLVE=f"github.com:443=127.0.0.1:{standin.port}",
                OMNIKERNEL_EGRESS_CA=str(standin.ca_path),
                OMK_TEST_GH_TOKEN=TOKEN,  # the kernel's environment: never the agent's
            ),
        )
        setup = kernel.execute("%sandbox broker github.com=OMK_TEST_GH_TOKEN")
        assert setup.status == "ok", setup.text
        assert "Brokered: github.com (credential from $OMK_TEST_GH_TOKEN)" in setup.text
        missing = kernel.execute("%sandbox broker gitlab.example")
        assert "gitlab.example (⚠ no credential found on this machine" in missing.text
        kernel.execute("%sandbox broker --clear")
        kernel.execute("%sandbox broker github.com=OMK_TEST_GH_TOKEN")

        pushed = kernel.execute("Please push a branch.", timeout=240)
        assert pushed.status == "ok", pushed.text
        assert standin.ref(REPO, "refs/heads/agent/e2e"), pushed.text
        assert "PUSH_EXIT=0" in pushed.text

        # Not the session's branch: the push waits on a card; approved, it lands.
        feature = run_and_answer(kernel, "Now push feature.", ["Approve"], timeout=240)
        assert "git push to github.com/acme/app: feature (fast-forward)" in feature.text, (
            feature.text
        )
        assert "FEATURE_EXIT=0" in feature.text, feature.text
        assert standin.ref(REPO, "refs/heads/feature") == standin.ref(REPO, "refs/heads/agent/e2e")

        before = standin.ref(REPO, "refs/heads/main")
        forced = kernel.execute("Now force main.", timeout=240)
        assert "FORCE_EXIT=1" in forced.text, forced.text
        assert "[remote rejected]" in forced.text
        assert "default branch 'main'" in forced.text
        assert standin.ref(REPO, "refs/heads/main") == before

        # The broker cleared, the host merely allowed: a plain tunnel and no credential.
        shutil.copy(standin.ca_path, workdir / "standin-ca.pem")
        kernel.execute("%sandbox broker --clear")
        kernel.execute("%sandbox allow github.com")
        plain = kernel.execute("Push without the broker.", timeout=240)
        assert "NOBROKER_EXIT=128" in plain.text, plain.text
        assert "could not read Username" in plain.text
        assert not standin.ref(REPO, "refs/heads/agent/nobroker")

        # The credential is in no cell, no byte of the store, nothing the agents kept (their
        # transcripts, homes and config in the state dir) and nothing in the notebook's folder.
        forms = variants(TOKEN)
        for cell in (setup, pushed, feature, forced, plain):
            assert not [f for f in forms if f in cell.text]
        files = [p for d in ("store", "state") for p in (tmp_path / d).rglob("*") if p.is_file()]
        files += [p for p in workdir.rglob("*") if p.is_file()]
        assert len(files) > 10
        for path in files:
            data = path.read_bytes().decode("latin-1")
            assert not [f for f in forms if f in data], path
        # The session learned the credential when the broker first used it: were it ever to
        # show up (here the scripted model itself prints it), it is redacted before it is
        # stored or shown.
        printed = kernel.execute("Now print the token.", timeout=240)
        assert "[redacted: brokered credential for github.com]" in printed.text, printed.text
        assert not [f for f in forms if f in printed.text]
        for path in (p for p in (tmp_path / "store").rglob("*") if p.is_file()):
            assert not [f for f in forms if f in path.read_bytes().decode("latin-1")], path

        # The policy shows the push rule and the branch the session made; `%policy test`
        # replays the recorded pushes under other rules.
        policy = kernel.execute("%policy")
        assert "push-own-branches" in policy.text and "agent/e2e" in policy.text, policy.text
        (workdir / "try.toml").write_text('[[rule]]\nrule = "push-branch"\npattern = "feat*"\n')
        replayed = kernel.execute("%policy test try.toml")
        rows = [line for line in replayed.text.splitlines() if "to github.com/acme/app:" in line]
        assert any("feature (fast-forward)" in r and "allow" in r for r in rows), replayed.text
        assert any("main (force)" in r and "deny" in r for r in rows), replayed.text
    finally:
        model.stop_thread()


def test_the_share_page_approves_a_push(tmp_path, workdir, start_kernel, standin):
    """The push ask is an ask like any other: a co-driver answers it from the share page."""
    import time

    import requests

    from omnikernel.events import EventKind
    from omnikernel.store.sessions import SessionStore
    from omnikernel.store.shares import ShareCodes

    from .test_share import Clock, Running, join

    require_cli("claude")
    model = FakeModelServer(Scenario.from_dict(SCENARIO))
    model.start_in_thread()
    store = SessionStore(tmp_path / "store" / "sessions.sqlite3")
    page = Running(store.path, Clock())
    try:
        kernel = start_kernel(
            workdir,
            **upstreams(
                model,
                OMNIKERNEL_AUTO_APPROVE="1",
                OMNIKERNEL_EGRESS_RESOLVE=f"github.com:443=127.0.0.1:{standin.port}",
                OMNIKERNEL_EGRESS_CA=str(standin.ca_path),
                OMK_TEST_GH_TOKEN=TOKEN,
            ),
        )
        kernel.execute("%sandbox broker github.com=OMK_TEST_GH_TOKEN")
        assert "PUSH_EXIT=0" in kernel.execute("Please push a branch.", timeout=240).text
        msg_id = kernel.kc.execute("Now push feature.")
        asked = None
        deadline = time.monotonic() + 180
        while asked is None and time.monotonic() < deadline:
            for session in store.sessions():
                for event in store.events(
                    session["session_id"], kinds=(EventKind.APPROVAL_REQUEST,)
                ):
                    if event.data.get("action") == "push" and "feature" in event.data["summary"]:
                        asked = event
            time.sleep(0.2)
        assert asked is not None, "no push was asked about"
        assert "feature (fast-forward)" in asked.data["summary"]
        grant = join(page, ShareCodes(store.path).new_code(asked.session_id, "rw"))
        body = {"request_id": asked.data["request_id"], "allow": True}
        sent = requests.post(f"{page.url}/api/answer", json=body, headers=grant.headers)
        assert sent.status_code == 202, sent.text
        cell = kernel.collect(msg_id, timeout=240)
        assert "FEATURE_EXIT=0" in cell.text, cell.text
        assert "git push to github.com/acme/app: feature (fast-forward) let through" in cell.text
        assert "(share page)" in cell.text, cell.text
        assert standin.ref(REPO, "refs/heads/feature") == standin.ref(REPO, "refs/heads/agent/e2e")
    finally:
        page.stop()
        model.stop_thread()
