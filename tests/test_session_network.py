"""The network asks end to end: the real CLIs in a real kernel and sandbox, the scripted model,
and a PyPI and an npm registry stand-in over TLS under their real names (`tests.standins`,
reached through ``OMNIKERNEL_EGRESS_RESOLVE``).

The agent's ``pip install`` / ``npm install`` reaches a host nothing allows: the connection
waits on an approval card ("pip wants to reach pypi.org:443 (`pip install ...`)"); approved,
the package lands in the notebook's folder; denied, the command fails at once with our reason
and the cell names the host and how to open it. The share page answers the same asks. Auto-approval is on throughout: it answers the
command's own ask, never the network's. The agent's client trusts the test CA because the
scripted command passes it (``--cert``, ``--cafile``), not because the product trusts it.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import time
from pathlib import Path

import pytest
import requests
import trustme

from omnikernel.events import Event, EventKind
from omnikernel.store.sessions import SessionStore
from omnikernel.store.shares import ShareCodes
from omnikernel.testing import FakeModelServer, Scenario

from .conftest import CellResult, require_cli
from .standins import NpmStandIn, PyPIStandIn, write_ca
from .test_kernel_control import run_and_answer, upstreams
from .test_share import Clock, Running, join

PIP = (
    "/usr/bin/python3 -m pip install --disable-pip-version-check --no-cache-dir "
    "--break-system-packages --cert ca.pem --target deps --index-url https://pypi.org/simple "
    "tinydb"
)
NPM = (
    "npm install --no-audit --no-fund --no-update-notifier --cafile ca.pem "
    "--registry https://registry.npmjs.org/ left-pad-standin"
)
SCENARIO = {
    "rules": [
        {"match": "install tinydb impatiently", "steps": [
            {"text": "Installing.", "tool_calls": [
                {"action": "shell", "command": PIP + " --timeout 2 --retries 0"}]},
            {"text": "The pip step finished."},
        ]},
        {"match": "install tinydb slowly", "steps": [
            {"text": "Installing.", "tool_calls": [{"action": "shell", "command": PIP + " --timeout 2"}]},
            {"text": "The pip step finished."},
        ]},
        {"match": "install tinydb", "steps": [
            {"text": "Installing.", "tool_calls": [{"action": "shell", "command": PIP}]},
            {"text": "The pip step finished."},
        ]},
        {"match": "install left-pad", "steps": [
            {"text": "Installing.", "tool_calls": [{"action": "shell", "command": NPM}]},
            {"text": "The npm step finished."},
        ]},
    ]
}  # fmt: skip


@pytest.fixture
def registries(workdir: Path):
    ca = trustme.CA()
    write_ca(ca, workdir / "ca.pem")
    (workdir / "package.json").write_text('{"name": "app", "version": "1.0.0"}')
    with PyPIStandIn(ca) as pypi, NpmStandIn(ca) as npm:
        yield pypi, npm


@pytest.fixture
def model():
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as server:
        yield server


def kernel_for(harness, model, registries, workdir, start_kernel, **extra):
    require_cli(harness)
    pypi, npm = registries
    return start_kernel(
        workdir,
        **upstreams(
            model,
            OMNIKERNEL_AUTO_APPROVE="1",
            OMNIKERNEL_HARNESS=harness,
            OMNIKERNEL_EGRESS_RESOLVE=f"{pypi.resolve()},{npm.resolve()}",
            **extra,
        ),
    )


@pytest.mark.parametrize("harness", ["claude", "codex", "pi"])
def test_pip_install_asks_for_each_host_and_lands_once_approved(
    harness, model, registries, workdir, start_kernel
):
    pypi, _ = registries
    kernel = kernel_for(harness, model, registries, workdir, start_kernel)
    cell = run_and_answer(kernel, "Please install tinydb.", ["Approve", "Approve"])
    assert cell.status == "ok", cell.text
    assert "pip wants to reach pypi.org:443 (`" + PIP + "`)" in cell.text, cell.text
    assert "pip wants to reach files.pythonhosted.org:443" in cell.text
    assert "network: pypi.org:443 opened — approved by" in cell.text
    assert "(widget)" in cell.text
    installed = workdir / "deps" / "tinydb" / "__init__.py"
    assert "from the stand-in" in installed.read_text()
    assert {host for host, _ in pypi.requests} == {"pypi.org", "files.pythonhosted.org"}
    # Auto-approval answered the command's ask, a person each host's.
    assert "auto-approved" in cell.text
    # "This once" was that command's: the next install asks again.
    again = run_and_answer(kernel, "Please install tinydb again.", ["Approve", "Approve"])
    assert again.text.count("⚠ NETWORK") == 2, again.text


def test_a_denied_host_fails_fast_and_the_cell_says_how_to_open_it(
    model, registries, workdir, start_kernel
):
    pypi, _ = registries
    kernel = kernel_for("claude", model, registries, workdir, start_kernel)
    started = time.monotonic()
    cell = run_and_answer(kernel, "Please install tinydb.", ["Deny"])
    took = time.monotonic() - started
    assert cell.status == "ok", cell.text
    assert not (workdir / "deps" / "tinydb").exists()
    assert pypi.requests == []  # nothing reached the stand-in
    # What pip printed carries our reason; the cell names the host and how to open it.
    assert "Forbidden by the Omnigent sandbox" in cell.text, cell.text
    assert "The sandbox refused" in cell.text and "pypi.org:443" in cell.text
    assert "%sandbox allow @pypi" in cell.text
    # One card: pip's retries met the remembered denial, at once, and asked nobody again.
    assert cell.text.count("⚠ NETWORK") == 1
    print(f"denied pip install cell: {took:.1f} s (pip retries a refused proxy 5 times)")
    # The person opens the preset: the same install goes through without asking.
    unknown = kernel.execute("%sandbox allow @pipy")
    assert unknown.status == "error" and "@pypi, @npm" in unknown.text, unknown.text
    assert "pypi.org, files.pythonhosted.org" in kernel.execute("%sandbox allow @pypi").text
    again = run_and_answer(kernel, "Please install tinydb again.", [])
    assert "wants to reach" not in again.text, again.text
    assert (workdir / "deps" / "tinydb" / "__init__.py").exists()
    # A deny-host rule wins over the allowed preset: refused at once, nobody asked.
    assert (
        "Added deny-host files.pythonhosted.org"
        in kernel.execute("%policy add deny-host files.pythonhosted.org").text
    )
    shutil.rmtree(workdir / "deps")
    denied = run_and_answer(kernel, "Please install tinydb once more.", [])
    assert "wants to reach" not in denied.text and "deny-host files.pythonhosted.org" in denied.text
    assert not (workdir / "deps" / "tinydb").exists()


@pytest.mark.parametrize("harness", ["claude", "codex", "pi"])
def test_npm_install_asks_and_lands_once_approved(
    harness, model, registries, workdir, start_kernel
):
    _, npm = registries
    kernel = kernel_for(harness, model, registries, workdir, start_kernel)
    cell = run_and_answer(kernel, "Please install left-pad.", ["Approve"])
    assert cell.status == "ok", cell.text
    assert "npm wants to reach registry.npmjs.org:443" in cell.text, cell.text
    index = workdir / "node_modules" / "left-pad-standin" / "index.js"
    assert "from the stand-in" in index.read_text()
    assert json.loads((workdir / "package.json").read_text())["dependencies"]
    assert {host for host, _ in npm.requests} == {"registry.npmjs.org"}


def network_asks(store: SessionStore, answered: set[str]) -> list[Event]:
    """The network asks recorded so far that nobody answered yet."""
    found = []
    for session in store.sessions():
        for event in store.events(session["session_id"], kinds=(EventKind.APPROVAL_REQUEST,)):
            if event.data.get("action") == "network" and event.data["request_id"] not in answered:
                found.append(event)
    return found


def test_the_share_page_approves_a_network_ask(model, registries, workdir, start_kernel, tmp_path):
    kernel = kernel_for("claude", model, registries, workdir, start_kernel)
    store = SessionStore(tmp_path / "store" / "sessions.sqlite3")
    page = Running(store.path, Clock())
    try:
        msg_id = kernel.kc.execute("Please install tinydb.")
        answered: set[str] = set()
        deadline = time.monotonic() + 120
        grant = None
        while len(answered) < 2 and time.monotonic() < deadline:
            for ask in network_asks(store, answered):
                if grant is None:
                    grant = join(page, ShareCodes(store.path).new_code(ask.session_id, "rw"))
                body = {"request_id": ask.data["request_id"], "allow": True}
                sent = requests.post(f"{page.url}/api/answer", json=body, headers=grant.headers)
                assert sent.status_code == 202, sent.text
                answered.add(ask.data["request_id"])
            time.sleep(0.1)
        cell = kernel.collect(msg_id, timeout=120)
    finally:
        page.stop()
    assert len(answered) == 2, cell.text
    assert "network: pypi.org:443 opened — approved by co-drive" in cell.text, cell.text
    assert "(share page)" in cell.text
    assert "from the stand-in" in (workdir / "deps" / "tinydb" / "__init__.py").read_text()


def answer_with_scope(
    kernel, code: str, scope: str, clicks: int, timeout: float = 180, first_after: float = 0
):
    """Run a cell; on each approval card, pick `scope` ("this session", "always for this
    host") in its Scope buttons, then click Approve, as a person does in the front end (the
    first one `first_after` seconds after it shows)."""
    kc = kernel.kc
    msg_id = kc.execute(code)
    outputs: list[dict] = []
    deadline = time.monotonic() + timeout
    approved = 0
    while time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "comm_open":
            state = msg["content"].get("data", {}).get("state", {})
            comm_id = msg["content"]["comm_id"]
            if state.get("_model_name") == "ToggleButtonsModel":
                index = list(state.get("_options_labels", [])).index(scope)
                update = {"method": "update", "state": {"index": index}, "buffer_paths": []}
                kc.shell_channel.send(
                    kc.session.msg("comm_msg", {"comm_id": comm_id, "data": update})
                )
            elif (
                state.get("_model_name") == "ButtonModel" and state.get("description") == "Approve"
            ):
                if not approved:
                    time.sleep(first_after)
                approved += 1
                click = {"method": "custom", "content": {"event": "click"}}
                kc.shell_channel.send(
                    kc.session.msg("comm_msg", {"comm_id": comm_id, "data": click})
                )
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            break
        elif kind in ("stream", "display_data", "execute_result", "error"):
            outputs.append(msg)
    reply = kc.get_shell_msg(timeout=30)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=30)
    result = CellResult(reply["content"], outputs)
    assert approved == clicks, result.text
    return result


def test_always_for_this_host_is_written_to_the_project_policy(
    model, registries, workdir, start_kernel
):
    kernel = kernel_for("claude", model, registries, workdir, start_kernel)
    cell = answer_with_scope(kernel, "Please install tinydb.", "always for this host", clicks=2)
    assert "network: files.pythonhosted.org:443 opened — approved by" in cell.text, cell.text
    policy = (workdir / ".omnikernel" / "policy.toml").read_text()
    assert 'rule = "network"\nsubject = "pypi.org"' in policy, policy
    assert 'subject = "files.pythonhosted.org"' in policy
    assert "pypi.org:443: allowed, by network" in kernel.execute("%policy test host pypi.org").text
    assert "asks a person" in kernel.execute("%policy test host evil.example").text
    # A new kernel of the same folder reads it: the install asks nothing.
    kernel.stop()
    again = kernel_for("claude", model, registries, workdir, start_kernel)
    shutil.rmtree(workdir / "deps")
    cell = run_and_answer(again, "Please install tinydb again.", [])
    assert "wants to reach" not in cell.text, cell.text
    assert (workdir / "deps" / "tinydb" / "__init__.py").exists()


def test_a_client_that_gives_up_waiting_retries_on_the_same_card(
    model, registries, workdir, start_kernel
):
    """pip waits 2 s for the proxy's answer, gives up and retries while the person reads the
    card: its retries wait on that one card, and the approval given after 5 s lets them on."""
    kernel = kernel_for("claude", model, registries, workdir, start_kernel)
    cell = answer_with_scope(
        kernel, "Please install tinydb slowly.", "this once", clicks=2, first_after=5
    )
    assert cell.text.count("⚠ NETWORK") == 2, cell.text
    assert "Retrying" in cell.text or "timed out" in cell.text.lower(), cell.text  # pip gave up
    assert "from the stand-in" in (workdir / "deps" / "tinydb" / "__init__.py").read_text()


def test_a_denied_registry_fails_npm_install_with_the_reason(
    model, registries, workdir, start_kernel
):
    _, npm = registries
    kernel = kernel_for("claude", model, registries, workdir, start_kernel)
    started = time.monotonic()
    cell = run_and_answer(kernel, "Please install left-pad.", ["Deny"])
    took = time.monotonic() - started
    assert cell.text.count("⚠ NETWORK") == 1, cell.text
    assert npm.requests == [] and not (workdir / "node_modules" / "left-pad-standin").exists()
    assert "The sandbox refused" in cell.text and "registry.npmjs.org:443" in cell.text
    assert "%sandbox allow @npm" in cell.text
    assert (
        "403 Forbidden by the Omnigent sandbox: the connection to registry.npmjs.org:443 was refused (denied by"
        in cell.text
    )
    print(f"denied npm install cell: {took:.1f} s")


def test_this_session_covers_the_host_for_the_session_and_writes_nothing(
    model, registries, workdir, start_kernel
):
    kernel = kernel_for("claude", model, registries, workdir, start_kernel)
    first = answer_with_scope(kernel, "Please install tinydb.", "this session", clicks=2)
    session_id = re.search(r"Session (session-[0-9a-f]+)", first.text).group(1)
    shutil.rmtree(workdir / "deps")
    again = run_and_answer(kernel, "Please install tinydb again.", [])
    assert "wants to reach" not in again.text, again.text
    assert (workdir / "deps" / "tinydb" / "__init__.py").exists()
    assert not (workdir / ".omnikernel" / "policy.toml").exists()
    # The approval is kept in the session's events: a new kernel continuing it has it, and a
    # new session does not.
    kernel.stop()
    same = kernel_for(
        "claude", model, registries, workdir, start_kernel, OMNIKERNEL_SESSION_ID=session_id
    )
    assert "pypi.org:443: allowed, by network" in same.execute("%policy test host pypi.org").text
    same.stop()
    other = kernel_for("claude", model, registries, workdir, start_kernel)
    assert "asks a person" in other.execute("%policy test host pypi.org").text


def test_a_command_that_gives_up_before_the_answer_closes_its_card_and_says_so(
    model, registries, workdir, start_kernel
):
    """Nobody answers; pip gives up after its own 2 s: the card does not linger (it is denied
    as the command ends) and the cell says why pip failed and how to open the host."""
    pypi, _ = registries
    kernel = kernel_for("claude", model, registries, workdir, start_kernel)
    cell = run_and_answer(kernel, "Please install tinydb impatiently.", [])
    assert cell.text.count("⚠ NETWORK") == 1, cell.text
    assert "network: pypi.org:443 refused — denied by omnigent (command ended" in cell.text
    assert "the command ended while its network ask waited for an answer" in cell.text
    assert "%sandbox allow @pypi" in cell.text and pypi.requests == []
