"""The kernel's `notebook` MCP server with the real Claude Code CLI against the scripted model:
the agent sees the cells and the live kernel, runs Python in it only when a person approves,
proposes a cell, and cannot rewrite the open notebook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnikernel.events import EventKind
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.store.sessions import SessionStore
from omnikernel.testing.notebooks import Approver

from .conftest import require_claude, require_cli

RUN_CODE = "agent_value = 6 * 7\nprint('printed by the agent')\nagent_value"


def mcp_step(tool: str, **arguments: object) -> dict[str, object]:
    return mcp_step_of(f"notebook.{tool}", **arguments)


def mcp_step_of(tool: str, **arguments: object) -> dict[str, object]:
    return {"tool_calls": [{"mcp": tool, "input": arguments}]}


SCENARIO = {
    "rules": [
        {
            "match": "look at the kernel",
            "steps": [
                mcp_step("kernel_variables"),
                mcp_step("kernel_inspect", name="df"),
                mcp_step("notebook_cells"),
                {"text": "I looked."},
            ],
        },
        {
            "match": "try python",
            "steps": [mcp_step("kernel_run", code=RUN_CODE), {"text": "Tried it."}],
        },
        {
            "match": "propose a plot",
            "steps": [
                mcp_step("notebook_insert_cell", source="df.plot(x='month', y='sales')"),
                {"text": "Proposed a cell."},
            ],
        },
        {
            "match": "add two and three",
            "steps": [mcp_step_of("calc.add", a=2, b=3), {"text": "Added."}],
        },
        {
            "match": "rewrite the notebook",
            "steps": [
                {"tool_calls": [{"action": "read", "path": "analysis.ipynb"}]},
                {"tool_calls": [{"action": "write", "path": "analysis.ipynb", "content": "{}"}]},
                {"tool_calls": [{"action": "shell", "command": "echo broken > analysis.ipynb"}]},
                {"text": "Tried."},
            ],
        },
    ]
}

NOTEBOOK = {
    "cells": [
        {
            "id": "first-cell",
            "cell_type": "code",
            "metadata": {},
            "execution_count": 3,
            "source": "%%python\nimport pandas as pd",
            "outputs": [{"output_type": "stream", "name": "stdout", "text": "loaded\n"}],
        },
        {"id": "notes", "cell_type": "markdown", "metadata": {}, "source": "# Sales by month"},
    ],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as server:
        yield server


@pytest.fixture
def notebook_dir(workdir: Path) -> Path:
    (workdir / "analysis.ipynb").write_text(json.dumps(NOTEBOOK))
    return workdir


def start(start_kernel, workdir: Path, model: FakeModelServer, **env: str):
    kernel = start_kernel(
        workdir,
        ANTHROPIC_BASE_URL=model.base_url,
        ANTHROPIC_API_KEY="test-key",
        OPENAI_BASE_URL=model.base_url + "/v1",
        OPENAI_API_KEY="test-key",
        GOOGLE_GEMINI_BASE_URL=model.base_url,
        GEMINI_API_KEY="test-key",
        JPY_SESSION_NAME="analysis.ipynb",
        **env,
    )
    setup = kernel.execute(
        "%%python\nimport pandas as pd\n"
        "df = pd.DataFrame({'month': ['jan', 'feb', 'mar'], 'sales': [10.5, 12.0, 9.25]})\n"
        "secret_note = 'do not send me'"
    )
    assert setup.status == "ok", setup.text
    return kernel


def tool_results(model: FakeModelServer) -> list[str]:
    """Every tool result the model was sent, in order (each request repeats the earlier)."""
    seen: list[str] = []
    for request in model.requests:
        if not request.path.startswith(
            ("/v1/messages", "/v1/responses", "/v1/chat/completions", "/v1beta/models")
        ):
            continue
        body = request.body if isinstance(request.body, dict) else json.loads(request.body)
        for item in body.get("input", []) if isinstance(body.get("input"), list) else []:
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                output = item.get("output")
                text = (
                    "".join(b.get("text", "") for b in output if isinstance(b, dict))
                    if isinstance(output, list)
                    else str(output)
                )
                text = text.partition("Output:")[2].strip() if "Output:" in text else text
                if text not in seen:
                    seen.append(text)
        for content in body.get("contents", []):  # Gemini: functionResponse parts
            for part in content.get("parts", []) if isinstance(content, dict) else []:
                response = (part.get("functionResponse") or {}).get("response") or {}
                text = str(response.get("output", ""))
                text = text.removeprefix("<untrusted_context>\n").removesuffix(
                    "\n</untrusted_context>"
                )
                if text and text not in seen:
                    seen.append(text)
        for message in body.get("messages", []):
            content = message.get("content")
            if message.get("role") == "tool":  # Chat Completions (Qwen Code)
                text = (
                    "".join(b.get("text", "") for b in content if isinstance(b, dict))
                    if isinstance(content, list)
                    else str(content)
                )
                if not text.startswith("<functions>") and text not in seen:
                    seen.append(text)  # (a tool search's result is not a tool's)
                continue
            for block in content if isinstance(content, list) else []:
                if block.get("type") == "tool_result":
                    inner = block.get("content")
                    text = (
                        "".join(b.get("text", "") for b in inner if isinstance(b, dict))
                        if isinstance(inner, list)
                        else str(inner)
                    )
                    if text not in seen:
                        seen.append(text)
    return seen


def requests_of(store_path: Path, tool: str) -> list[dict[str, object]]:
    store = SessionStore(store_path)
    return [
        e.data
        for s in store.sessions()
        for e in store.events(str(s["session_id"]), kinds=(EventKind.APPROVAL_REQUEST,))
        if e.data.get("tool") == tool
    ]


def test_the_agent_sees_variables_a_dataframe_and_the_cells(model, notebook_dir, start_kernel):
    kernel = start(start_kernel, notebook_dir, model)
    result = kernel.execute("Please look at the kernel.", timeout=180)
    assert result.status == "ok", result.text
    variables, inspected, cells = tool_results(model)[:3]
    names = {v["name"]: v for v in json.loads(variables)["variables"]}
    assert names["df"]["shape"] == "3×2" and names["df"]["type"].endswith("DataFrame")
    assert names["secret_note"]["shape"] == "len 14"
    assert "do not send me" not in variables  # names and shapes, never values
    assert "pd" not in names  # modules are not the user's variables
    assert "3 rows × 2 columns" in inspected and "month" in inspected and "sales" in inspected
    assert "describe()" in inspected and "agent-data/df" in inspected
    assert (notebook_dir / "agent-data").is_dir()
    listed = json.loads(cells)
    assert [c["id"] for c in listed["cells"]] == ["first-cell", "notes"]
    assert listed["cells"][0]["outputs"] == ["loaded\n"]
    assert listed["cells"][0]["execution_count"] == 3
    assert listed["cells"][1]["source"] == "# Sales by month"
    # The server's secret is in a private file, never on a command line (`ps` shows those to
    # every user of the machine).
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    assert any("--mcp-config" in line for line in lines)  # the agent's CLI still runs
    assert not any("Bearer" in line for line in lines)


def test_kernel_run_asks_and_runs_when_a_person_approves(
    model, notebook_dir, start_kernel, tmp_path
):
    store = tmp_path / "store" / "sessions.sqlite3"
    kernel = start(start_kernel, notebook_dir, model, OMNIKERNEL_AUTO_APPROVE="1")
    with Approver(store) as approver:
        result = kernel.execute("Please try python.", timeout=180)
    assert result.status == "ok", result.text
    # It asked, although auto-approval is on: `ask-python` is a rule's ask.
    asked = requests_of(store, "notebook.kernel_run")
    assert len(asked) == 1 and asked[0]["action"] == "python"
    assert asked[0]["summary"] == RUN_CODE and approver.answered
    # The card shows the tool, the code and why it asks.
    assert "notebook.kernel_run" in result.text and "agent_value = 6 * 7" in result.text
    assert "runs Python in your kernel" in result.text
    ran = json.loads(tool_results(model)[0])
    assert ran == {
        "stdout": "printed by the agent\n",
        "stderr": "",
        "result": "42",
        "error": None,
    }
    check = kernel.execute("%%python\nprint(agent_value)")
    assert check.text.strip() == "42"


def test_kernel_run_does_nothing_when_denied_or_unanswered(
    model, notebook_dir, start_kernel, tmp_path
):
    store = tmp_path / "store" / "sessions.sqlite3"
    kernel = start(
        start_kernel,
        notebook_dir,
        model,
        OMNIKERNEL_AUTO_APPROVE="1",
        OMNIKERNEL_APPROVAL_TIMEOUT="3",
    )
    unanswered = kernel.execute("Please try python.", timeout=180)
    assert unanswered.status == "ok", unanswered.text
    assert "nobody answered" in tool_results(model)[0]
    with Approver(store, allow=lambda _request: False):
        denied = kernel.execute("Please try python again.", timeout=180)
    assert denied.status == "ok", denied.text
    assert len(requests_of(store, "notebook.kernel_run")) == 2
    assert any("denied" in r for r in tool_results(model)[1:])
    check = kernel.execute("%%python\nprint('agent_value' in dir())")
    assert check.text.strip() == "False"


def test_a_policy_deny_stops_kernel_run_without_asking(model, notebook_dir, start_kernel, tmp_path):
    policy = notebook_dir / ".omnikernel" / "policy.toml"
    policy.parent.mkdir()
    policy.write_text('[[rule]]\nrule = "deny-tool"\ntool = "notebook.kernel_*"\n')
    kernel = start(start_kernel, notebook_dir, model)
    result = kernel.execute("Please try python.", timeout=180)
    assert result.status == "ok", result.text
    assert "deny-tool notebook.kernel_*" in tool_results(model)[0]
    check = kernel.execute("%%python\nprint('agent_value' in dir())")
    assert check.text.strip() == "False"


def test_a_proposed_cell_comes_back_as_a_next_input_payload(model, notebook_dir, start_kernel):
    kernel = start(start_kernel, notebook_dir, model)
    result = kernel.execute("Please propose a plot.", timeout=180)
    assert result.status == "ok", result.text
    assert result.reply["payload"] == [
        {
            "source": "set_next_input",
            "text": "%%python\ndf.plot(x='month', y='sales')",
            "replace": False,
        }
    ]
    assert "proposed below the running one" in tool_results(model)[0]
    nothing_ran = kernel.execute("%%python\nprint(len(_agent.text) > 0)")
    assert nothing_ran.status == "ok"


def test_the_open_notebook_is_read_only_for_the_agent(model, notebook_dir, start_kernel):
    before = (notebook_dir / "analysis.ipynb").read_text()
    kernel = start(start_kernel, notebook_dir, model, OMNIKERNEL_AUTO_APPROVE="1")
    result = kernel.execute("Please rewrite the notebook.", timeout=180)
    assert result.status == "ok", result.text
    write, shell = tool_results(model)[1:3]
    assert "read-only for agents" in write and "notebook_insert_cell" in write
    assert "Read-only file system" in shell or "busy" in shell, shell
    assert (notebook_dir / "analysis.ipynb").read_text() == before
    # Another notebook in the folder stays the agent's to edit.
    other = notebook_dir / "scratch.ipynb"
    other.write_text("{}")
    assert other.read_text() == "{}"


@pytest.mark.parametrize("harness", ["codex", "pi", "claude-acp", "opencode", "gemini", "qwen"])
def test_every_harness_with_mcp_gets_the_tools_and_the_gate(
    harness, model, notebook_dir, start_kernel, tmp_path
):
    """Codex through ``mcp_servers`` in its config (it loads MCP tools through its
    ``tool_search`` tool, which the scripted model calls first); an ACP agent through
    ``mcpServers`` (HTTP: claude-code-acp advertises it), its own permission request for a
    notebook tool answered at once, since the server asks the policy."""
    require_cli({"claude-acp": "claude-code-acp"}.get(harness, harness))
    store = tmp_path / "store" / "sessions.sqlite3"
    kernel = start(start_kernel, notebook_dir, model, OMNIKERNEL_HARNESS=harness)
    looked = kernel.execute("Please look at the kernel.", timeout=180)
    assert looked.status == "ok", looked.text
    assert tool_results(model), looked.text
    names = {v["name"] for v in json.loads(tool_results(model)[0])["variables"]}
    assert {"df", "secret_note"} <= names
    with Approver(store) as approver:
        ran = kernel.execute("Please try python.", timeout=180)
    assert ran.status == "ok", ran.text
    assert [r["summary"] for r in approver.answered if r["tool"] == "notebook.kernel_run"] == [
        RUN_CODE
    ]
    assert kernel.execute("%%python\nprint(agent_value)").text.strip() == "42"


def test_agents_says_which_harnesses_get_the_notebook_tools(model, notebook_dir, start_kernel):
    kernel = start(start_kernel, notebook_dir, model)
    listed = kernel.execute("%agents").text
    assert "notebook tools (MCP)" in listed
    assert "HTTP servers only (Pi has no MCP client" in listed


def test_kernel_run_runs_when_approved_from_the_share_page(
    model, notebook_dir, start_kernel, tmp_path
):
    """The share server writes a co-driver's answer to the store (`ShareCodes.post_answer`,
    after its own grant and origin checks, tested in test_share); the waiting ask takes it."""
    import threading
    import time

    from omnikernel.store.shares import ShareCodes

    store = tmp_path / "store" / "sessions.sqlite3"
    kernel = start(start_kernel, notebook_dir, model)
    done = threading.Event()

    def co_driver() -> None:
        while not done.wait(0.2):
            if not store.exists():
                continue
            asked = SessionStore(store)
            for session in asked.sessions():
                sid = str(session["session_id"])
                for event in asked.events(sid, kinds=(EventKind.APPROVAL_REQUEST,)):
                    if event.data.get("tool") == "notebook.kernel_run":
                        ShareCodes(store).post_answer(
                            sid,
                            str(event.data["request_id"]),
                            True,
                            "co-drive at 127.0.0.1",
                            "share page",
                        )
                        return

    helper = threading.Thread(target=co_driver, daemon=True)
    helper.start()
    started = time.monotonic()
    result = kernel.execute("Please try python.", timeout=180)
    done.set()
    helper.join(5)
    assert result.status == "ok", result.text
    assert time.monotonic() - started < 170  # answered, not timed out
    sessions = SessionStore(store)
    decisions = [
        e.data
        for s in sessions.sessions()
        for e in sessions.events(str(s["session_id"]), kinds=(EventKind.APPROVAL_DECISION,))
    ]
    assert [d["source"] for d in decisions] == ["share page"] and decisions[0][
        "decision"
    ] == "allow"
    assert kernel.execute("%%python\nprint(agent_value)").text.strip() == "42"


CALC = Path(__file__).parent / "mcp_calc_server.py"


# Serial: a Python MCP server starting inside the sandbox missed the CLIs' one-minute startup
# wait when six workers loaded the two cores.
@pytest.mark.serial
@pytest.mark.parametrize("harness", ["claude", "codex"])
def test_the_users_mcp_server_runs_in_the_sandbox_under_the_policy(
    harness, model, notebook_dir, start_kernel
):
    """A stdio server from the notebook's mcp.toml, started by the agent's CLI inside its
    sandbox; a policy allows or denies its tool by name, ``calc.add``."""
    import sys

    require_cli(harness)
    config = notebook_dir / ".omnikernel"
    config.mkdir()
    (config / "mcp.toml").write_text(
        f"[servers.calc]\ncommand = {json.dumps(sys.executable)}\nargs = [{json.dumps(str(CALC))}]\n"
    )
    (config / "policy.toml").write_text('[[rule]]\nrule = "allow-tool"\ntool = "calc.add"\n')
    # Not prewarmed: Codex started before `%sandbox read` restarts for it, and cannot resume
    # the thread its prewarm opened ("no rollout found"; a known issue, not this test's).
    kernel = start(
        start_kernel, notebook_dir, model, OMNIKERNEL_HARNESS=harness, OMNIKERNEL_PREWARM="0"
    )
    base = Path(sys.base_prefix)
    if base.is_relative_to(Path.home()):  # the interpreter lives in a closed home: open it
        opened = kernel.execute(f"%sandbox read {base} {Path(sys.prefix)}")
        assert opened.status == "ok", opened.text
    added = kernel.execute("Please add two and three.", timeout=180)
    assert added.status == "ok", added.text
    assert tool_results(model), added.text
    result = tool_results(model)[0]
    assert result.startswith("5 "), (result, added.text)
    assert "APPROVAL" not in added.text  # allowed by the rule, by name
    # The server ran in the sandbox: the home it saw is the CLI's private one.
    assert "/state/" in result, result
    (config / "policy.toml").write_text('[[rule]]\nrule = "deny-tool"\ntool = "calc.*"\n')
    assert kernel.execute("%policy reload").status == "ok"
    denied = kernel.execute("Please add two and three again.", timeout=180)
    assert denied.status == "ok", denied.text
    assert "deny-tool calc.*" in denied.text, denied.text
    assert not any(r.startswith("5 ") for r in tool_results(model)[1:])
