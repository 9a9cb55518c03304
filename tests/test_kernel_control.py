"""Control end to end: the real CLIs (claude, codex, pi) in a real kernel, approvals answered
like a person would, by sending the approval card's button click as a comm message.

The seed's two examples: `git push` after `npm install` asks (deny stops it, approve lets it
run), and a spend threshold pauses the agent until it is approved to go on.
"""

from __future__ import annotations

import queue
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from omnikernel.gateway import PriceTable
from omnikernel.testing import FakeModelServer, Scenario

from .conftest import CellResult, require_cli

USAGE = {"input_tokens": 2000, "output_tokens": 80}
SCENARIO = {
    "rules": [
        {"match": "install the package", "steps": [
            {"text": "Installing.", "tool_calls": [
                {"action": "shell", "command": "npm install --offline --no-audit --no-fund ./pkg"}]},
            {"text": "Installed the package."},
        ]},
        {"match": "push the work", "steps": [
            {"text": "Pushing.", "tool_calls": [{"action": "shell", "command": "git push -q origin HEAD:main"}]},
            {"text": "Push step finished."},
        ]},
        {"match": "create the notes file", "steps": [
            {"text": "Writing.", "tool_calls": [
                {"action": "shell", "command": "echo remembered > notes.txt"}], "usage": USAGE},
            {"text": "Created notes.txt.", "usage": USAGE},
        ]},
        {"match": "which file", "steps": [{"text": "Earlier I created notes.txt.", "usage": USAGE}]},
    ]
}  # fmt: skip
HARNESSES = ["claude", "codex", "pi"]
#: The ACP agents of issue 27, which have approval modes of their own.
ACP_HARNESSES = ["gemini", "qwen", "opencode"]


@pytest.fixture
def model():
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as server:
        yield server


def upstreams(model: FakeModelServer, **extra: str) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "k",
        "OPENAI_BASE_URL": model.base_url + "/v1",
        "OPENAI_API_KEY": "k",
        "GOOGLE_GEMINI_BASE_URL": model.base_url,
        "GEMINI_API_KEY": "k",
        **extra,
    }


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


def project(workdir: Path) -> Path:
    """A git repo with a local remote inside the notebook folder, and a local npm package."""
    pkg = workdir / "pkg"
    pkg.mkdir()
    (pkg / "package.json").write_text('{"name": "localpkg", "version": "1.0.0"}')
    (workdir / "package.json").write_text('{"name": "app", "version": "1.0.0"}')
    remote = workdir / "remote.git"
    git(workdir, "init", "-q", "--bare", str(remote))
    git(workdir, "init", "-q")
    for key, value in (("user.email", "t@example.com"), ("user.name", "t")):
        git(workdir, "config", key, value)
    git(workdir, "remote", "add", "origin", str(remote))
    (workdir / "README").write_text("hello\n")
    git(workdir, "add", "README")
    git(workdir, "commit", "-qm", "first")
    return remote


def run_and_answer(kernel: Any, code: str, clicks: list[str], timeout: float = 180) -> CellResult:
    """Run a cell; each time an approval card appears, click the next button of `clicks`
    ("Approve", "Deny", "Continue", "Stop") by sending its comm message, as a front end does."""
    kc = kernel.kc
    msg_id = kc.execute(code)
    outputs: list[dict[str, Any]] = []
    pending = list(clicks)
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"cell did not finish; outputs: {outputs}")
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "comm_open":
            state = msg["content"].get("data", {}).get("state", {})
            is_button = state.get("_model_name") == "ButtonModel"
            if pending and is_button and state.get("description") == pending[0]:
                pending.pop(0)
                click = kc.session.msg(
                    "comm_msg",
                    {
                        "comm_id": msg["content"]["comm_id"],
                        "data": {"method": "custom", "content": {"event": "click"}},
                    },
                )
                kc.shell_channel.send(click)
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            break
        elif kind in ("stream", "display_data", "update_display_data", "execute_result", "error"):
            outputs.append(msg)
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=30)
    assert not pending, f"no card offered {pending}; outputs: {CellResult(reply, outputs).text}"
    return CellResult(reply["content"], outputs)


@pytest.mark.parametrize("harness", HARNESSES)
def test_push_after_install_asks_deny_stops_it_approve_runs_it(
    harness, model, workdir, start_kernel
):
    require_cli(harness)
    remote = project(workdir)
    # Auto-approval is on: it answers the default ask (so the install just runs), never a rule's.
    kernel = start_kernel(
        workdir, **upstreams(model, OMNIKERNEL_AUTO_APPROVE="1", OMNIKERNEL_HARNESS=harness)
    )
    before = run_and_answer(kernel, "Please push the work.", [])
    assert before.status == "ok", before.text
    assert "main" in git(workdir, "--git-dir", str(remote), "branch")  # no rule armed yet
    git(workdir, "--git-dir", str(remote), "branch", "-D", "main")

    installed = run_and_answer(kernel, "Please install the package.", [])
    assert installed.status == "ok", installed.text
    assert (workdir / "node_modules" / "localpkg").exists(), installed.text

    denied = run_and_answer(kernel, "Please push the work.", ["Deny"])
    assert "APPROVAL NEEDED" in denied.text and "push-after-install" in denied.text
    assert "DENIED" in denied.text and "denied by" in denied.text
    assert git(workdir, "--git-dir", str(remote), "branch") == ""  # nothing was pushed

    approved = run_and_answer(kernel, "Please push the work.", ["Approve"])
    assert "approved by" in approved.text and "(widget)" in approved.text, approved.text
    assert "main" in git(workdir, "--git-dir", str(remote), "branch")

    # Decisions are in the store, with who decided and from where, and the rule that asked.
    log = kernel.execute(
        "%%python\nimport json\nfrom omnikernel.store.sessions import SessionStore\n"
        "s = get_ipython().kernel.agents\n"
        "print(json.dumps([e.data for e in s.store.events(s.session_id)"
        " if e.kind == 'approval_decision']))"
    )
    assert '"source": "widget"' in log.text and '"push-after-install"' in log.text


def test_a_spend_threshold_pauses_and_goes_on_when_approved(model, workdir, start_kernel):
    require_cli("claude")
    kernel = start_kernel(
        workdir,
        **upstreams(model, OMNIKERNEL_AUTO_APPROVE="1", OMNIKERNEL_MODEL="claude-sonnet-4-5"),
    )
    added = kernel.execute("%policy add pause-every 0.005")
    assert "pause-every 0.005" in added.text and "session" in added.text
    # Each scripted call costs 2000 x $3/M + 80 x $15/M = $0.0072: the first crosses $0.005,
    # so the next action pauses (auto-approval does not answer a pause).
    first = run_and_answer(kernel, "Please create the notes file.", ["Continue"])
    assert first.status == "ok", first.text
    assert "PAUSED" in first.text and "pause-every 0.005" in first.text
    assert (workdir / "notes.txt").exists()
    # $0.0144 spent: past $0.010, so the next model call waits at the gateway for a person.
    second = run_and_answer(kernel, "Which file did you create?", ["Continue"])
    assert second.status == "ok", second.text
    assert "pause: continued" in second.text and "Earlier I created notes.txt" in second.text
    # Stopping at a pause refuses the model call.
    kernel.execute("%policy add pause-every 0.001")
    stopped = run_and_answer(kernel, "Which file did you create?", ["Stop"])
    assert "pause: stopped" in stopped.text
    listed = kernel.execute("%policy")
    assert "next pause at" in listed.text and "push-after-install" in listed.text
    # A dry run of another policy over this recorded session.
    (workdir / "dry.toml").write_text('[[rule]]\nrule = "deny"\npattern = "echo"\n')
    dry = kernel.execute("%policy test dry.toml")
    assert "Dry run of dry.toml" in dry.text and "1 deny" in dry.text, dry.text
    (workdir / "bad.toml").write_text('[[rule]]\nrule = "deny"\n')
    bad = kernel.execute("%policy load bad.toml")
    assert bad.status == "error" and "bad.toml: rule #1 (deny)" in bad.text, bad.text
    assert kernel.execute("%%python\nprint(6 * 7)").text.strip() == "42"


def test_a_broken_policy_file_fails_closed(model, workdir, start_kernel):
    require_cli("claude")
    (workdir / ".omnikernel").mkdir()
    (workdir / ".omnikernel" / "policy.toml").write_text("[[rule]\n")
    kernel = start_kernel(workdir, **upstreams(model, OMNIKERNEL_AUTO_APPROVE="1"))
    listed = kernel.execute("%policy")
    assert "POLICY DOES NOT LOAD" in listed.text and "not valid TOML" in listed.text
    result = kernel.execute("Please create the notes file.")
    assert "DENIED" in result.text and "does not load" in result.text, result.text
    assert not (workdir / "notes.txt").exists()


@pytest.mark.parametrize("harness", HARNESSES)
def test_the_default_model_of_every_pinned_cli_is_priced(harness, model, workdir, start_kernel):
    require_cli(harness)
    kernel = start_kernel(workdir, **upstreams(model, OMNIKERNEL_HARNESS=harness))
    result = kernel.execute("Which file did you create?")
    assert result.status == "ok", result.text
    wire, path = (
        ("openai", "/v1/responses") if harness == "codex" else ("anthropic", "/v1/messages")
    )
    sent = model.bodies(path)[-1]["model"]
    assert PriceTable.load().lookup(wire, sent) is not None, sent
    assert "unpriced" not in result.text and "$0.0" in result.text, result.text


@pytest.mark.parametrize("harness", HARNESSES + ACP_HARNESSES)
def test_a_deny_rule_stops_even_commands_the_cli_deems_read_only(harness, workdir, start_kernel):
    """Claude Code runs `cat` without asking unless told to ask for every Bash call (checked:
    without the kernel's `--settings` ask rule this test fails, `cat` runs and prints)."""
    require_cli(harness)
    scenario = {
        "rules": [
            {
                "match": "show the readme",
                "steps": [
                    {
                        "text": "Reading.",
                        "tool_calls": [{"action": "shell", "command": "cat README"}],
                    },
                    {"text": "Shown."},
                ],
            }
        ]
    }
    (workdir / "README").write_text("secret-ish\n")
    with FakeModelServer(Scenario.from_dict(scenario)).start_in_thread() as model:
        kernel = start_kernel(
            workdir, **upstreams(model, OMNIKERNEL_AUTO_APPROVE="1", OMNIKERNEL_HARNESS=harness)
        )
        allowed = kernel.execute("Please show the readme.")
        assert "cat README" in allowed.text and "DENIED" not in allowed.text, allowed.text
        if harness != "gemini":  # Gemini CLI's ACP updates carry no tool output
            assert "secret-ish" in allowed.text, allowed.text
        kernel.execute("%policy add deny cat")
        denied = kernel.execute("Please show the readme.")
    assert "DENIED" in denied.text and "deny 'cat'" in denied.text, denied.text
    assert "secret-ish" not in denied.text


def test_policy_state_survives_a_kernel_restart(model, workdir, start_kernel):
    require_cli("claude")
    remote = project(workdir)
    env = upstreams(model, OMNIKERNEL_AUTO_APPROVE="1", OMNIKERNEL_SESSION_ID="restarted")
    first = start_kernel(workdir, **env)
    assert run_and_answer(first, "Please install the package.", []).status == "ok"
    first.stop()
    second = start_kernel(workdir, **env)  # same notebook session, same store
    assert "armed: `npm install" in second.execute("%policy").text
    denied = run_and_answer(second, "Please push the work.", ["Deny"])
    assert "push-after-install" in denied.text and "DENIED" in denied.text
    assert git(workdir, "--git-dir", str(remote), "branch") == ""


def test_a_waiting_approval_is_answered_from_a_terminal(model, workdir, start_kernel, capsys):
    """`omnikernel attach SESSION --approve REQUEST` resolves the cell that waits, as the card
    would; a second answer is told the first one won."""
    from omnikernel.cli import main as cli
    from omnikernel.events import EventKind
    from omnikernel.store.sessions import SessionStore

    require_cli("claude")
    remote = project(workdir)
    kernel = start_kernel(
        workdir,
        **upstreams(model, OMNIKERNEL_AUTO_APPROVE="1", OMNIKERNEL_SESSION_ID="from-a-terminal"),
    )
    assert run_and_answer(kernel, "Please install the package.", []).status == "ok"
    where = kernel.execute("%%python\nprint(get_ipython().kernel.agents.store.path)")
    store_path = where.text.strip().splitlines()[-1]
    msg_id = kernel.kc.execute("Please push the work.")
    store = SessionStore(store_path)
    deadline, request_id = time.monotonic() + 120, ""
    while not request_id and time.monotonic() < deadline:
        asked = [
            e
            for e in store.events("from-a-terminal", kinds=(EventKind.APPROVAL_REQUEST,))
            if "push" in str(e.data.get("summary", ""))
        ]
        request_id = str(asked[-1].data["request_id"]) if asked else ""
        time.sleep(0.1)
    assert request_id, "the push never asked"
    assert (
        cli.main(["attach", "from-a-terminal", "--store", store_path, "--approve", request_id]) == 0
    )
    result = kernel.collect(msg_id, timeout=120)
    assert result.status == "ok", result.text
    assert "main" in git(workdir, "--git-dir", str(remote), "branch")  # the push ran
    decided = [
        e.data
        for e in store.events("from-a-terminal", kinds=(EventKind.APPROVAL_DECISION,))
        if e.data.get("request_id") == request_id
    ]
    assert decided and decided[0]["decision"] == "allow" and decided[0]["source"] == "terminal"
    # Too late: the first answer won.
    assert cli.main(["attach", "from-a-terminal", "--store", store_path, "--deny", request_id]) == 2
    assert "decided already" in capsys.readouterr().err
