"""The notebook MCP server's parts without a kernel: the tools over a namespace, the server's
secret check and its gate, the MCP formats each harness gets, mcp.toml, and the policy rules."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from omnikernel.harnesses.mcp import (
    McpConfigError,
    McpServer,
    acp_servers,
    claude_config,
    codex_config,
    load_servers,
)
from omnikernel.kernel import notebook_tools
from omnikernel.kernel.notebook_server import Gated, Kernel, NotebookServer
from omnikernel.policy import Policy, PolicyState, Request, judge
from omnikernel.policy.reach_rules import qualified_tool
from omnikernel.policy.rule import Outcome, RuleError
from omnikernel.policy.rules import make_rule

# -- the tools -------------------------------------------------------------------------------


def test_variables_name_types_and_shapes_but_never_values():
    import pandas as pd

    namespace = {
        "df": pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
        "token": "s3cret-value",
        "pd": pd,
        "_hidden": 1,
        "In": [],
        "helper": lambda: None,
    }
    listed = notebook_tools.variables(namespace)
    assert [v["name"] for v in listed] == ["df", "token"]
    assert listed[0]["shape"] == "2×2" and listed[0]["size_bytes"] > 0
    assert listed[1]["type"] == "str" and listed[1]["shape"] == "len 12"
    assert listed[1]["size_bytes"] > 12
    assert "s3cret" not in json.dumps(listed)


def test_inspect_summarises_a_dataframe_and_writes_it_for_the_agent(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"month": ["jan", "feb"], "sales": [1.5, 2.5]})
    text = notebook_tools.inspect_value("frame", {"frame": frame}, tmp_path)
    assert "2 rows × 2 columns" in text and "sales: float64" in text and "describe()" in text
    assert any((tmp_path / "agent-data").iterdir())
    with pytest.raises(KeyError, match="no variable 'nope'.*frame"):
        notebook_tools.inspect_value("nope", {"frame": frame}, tmp_path)
    long = notebook_tools.inspect_value("s", {"s": "x" * 50_000}, tmp_path)
    assert len(long) < 3000 and "cut" in long


def test_run_returns_output_result_and_error_and_keeps_names():
    namespace: dict[str, Any] = {}
    ran = notebook_tools.run("x = 2\nprint('hi')\nx * 21", namespace)
    assert ran == {"stdout": "hi\n", "stderr": "", "result": "42", "error": None}
    assert namespace["x"] == 2
    failed = notebook_tools.run("y = 1\n1 / 0", namespace)
    assert failed["error"].startswith("ZeroDivisionError") and "line 2" in failed["error"]
    assert namespace["y"] == 1
    exited = notebook_tools.run("raise SystemExit(3)", namespace)
    assert exited["error"] is not None and "SystemExit" in exited["error"]
    assert "SyntaxError" in notebook_tools.run("def f(:", namespace)["error"]


def test_the_stop_button_interrupts_code_that_never_ends():
    import os
    import signal

    stopped: list[int] = []

    def kernels_handler(signum: int, frame: object) -> None:
        stopped.append(signum)

    previous = signal.signal(signal.SIGINT, kernels_handler)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        ran = notebook_tools.run("while True:\n    pass", {})
    finally:
        timer.join()
        restored = signal.signal(signal.SIGINT, previous)
    assert ran["error"] is not None and ran["error"].startswith("KeyboardInterrupt")
    assert stopped == [signal.SIGINT]  # the kernel's own handler (it stops the turn) ran too
    assert restored is kernels_handler  # put back after the run


def test_cells_come_from_the_saved_file_with_the_running_cell_marked(tmp_path):
    path = tmp_path / "n.ipynb"
    path.write_text(
        json.dumps(
            {
                "cells": [
                    {"id": "a", "cell_type": "markdown", "source": ["# T", "itle"]},
                    {
                        "id": "b",
                        "cell_type": "code",
                        "source": "x",
                        "execution_count": 1,
                        "outputs": [
                            {"output_type": "execute_result", "data": {"text/plain": "1"}},
                            {"output_type": "display_data", "data": {"image/png": "..."}},
                            {"output_type": "error", "ename": "E", "evalue": "bad"},
                        ],
                    },
                ]
            }
        )
    )
    listed = notebook_tools.cells(path, "b")
    assert listed["cells"][0]["source"] == "# Title" and "running" not in listed["cells"][0]
    assert listed["cells"][1]["running"] is True
    assert listed["cells"][1]["outputs"] == ["1", "[image/png]", "E: bad"]
    assert notebook_tools.cells(None, "")["cells"] == []


def test_insert_cell_proposes_python_or_markdown_and_refuses_nonsense():
    proposed: list[tuple[str, bool]] = []
    notebook_tools.insert_cell("df.plot()", "code", lambda t, r: proposed.append((t, r)))
    notebook_tools.insert_cell("# Notes", "markdown", lambda t, r: proposed.append((t, r)))
    assert proposed == [("%%python\ndf.plot()", False), ("%%markdown\n# Notes", False)]
    with pytest.raises(ValueError, match="code' or 'markdown"):
        notebook_tools.insert_cell("x", "raw", lambda t, r: None)
    with pytest.raises(ValueError, match="empty"):
        notebook_tools.insert_cell("  ", "code", lambda t, r: None)


# -- the server ------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    namespace: dict[str, Any] = {"x": [1, 2, 3]}
    gated: list[tuple[str, str, str]] = []
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def gate(harness, tool, action, summary, tool_input):
        gated.append((harness, tool, action))
        return Gated(action != "python", "Omnigent policy denied this: test")

    kernel = Kernel(
        namespace=lambda: namespace,
        notebook=lambda: None,
        running_cell=lambda: "",
        folder=tmp_path,
        set_next_input=lambda text, replace: None,
        submit=lambda work: asyncio.run_coroutine_threadsafe(work(), loop),
        gate=gate,
    )
    server = NotebookServer(kernel).start_in_thread()
    yield server, namespace, gated
    server.stop_thread()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def call(
    server: NotebookServer, headers: dict[str, str], method: str, params: dict
) -> httpx.Response:
    transport = httpx.HTTPTransport(uds=str(server.socket_path))
    with httpx.Client(transport=transport, base_url=f"http://127.0.0.1:{server.inside_port}") as c:
        return c.post(
            "/mcp",
            headers={
                **headers,
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-06-18",
            },
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
        )


def test_the_server_answers_only_its_harnesses_and_gates_every_call(served):
    server, namespace, gated = served
    assert server.socket_path is not None and oct(server.socket_path.stat().st_mode)[-3:] == "600"
    claude = server.server_for("claude")
    assert claude.bridged_port == server.inside_port and claude.socket == server.socket_path
    listed = call(server, dict(claude.headers), "tools/list", {}).json()
    names = {t["name"] for t in listed["result"]["tools"]}
    assert names == {
        "notebook_cells",
        "kernel_variables",
        "kernel_inspect",
        "kernel_run",
        "notebook_insert_cell",
    }
    ran = call(
        server, dict(claude.headers), "tools/call", {"name": "kernel_variables", "arguments": {}}
    ).json()["result"]
    assert not ran["isError"] and '"x"' in ran["content"][0]["text"]
    denied = call(
        server,
        dict(claude.headers),
        "tools/call",
        {"name": "kernel_run", "arguments": {"code": "x.append(4)"}},
    ).json()["result"]
    assert denied["isError"] and "policy denied this" in denied["content"][0]["text"]
    assert namespace["x"] == [1, 2, 3]  # a denied call never runs
    assert gated == [
        ("claude", "notebook.kernel_variables", "read"),
        ("claude", "notebook.kernel_run", "python"),
    ]
    # No secret, a wrong one, a harness's old one, or a browser: refused before the SDK.
    assert call(server, {}, "tools/list", {}).status_code == 401
    assert call(server, {"Authorization": "Bearer guess"}, "tools/list", {}).status_code == 401
    old = dict(claude.headers)
    server.server_for("claude")
    assert call(server, old, "tools/list", {}).status_code == 401
    codex = dict(server.server_for("codex").headers)
    browser = call(server, {**codex, "Origin": "http://evil.example"}, "tools/list", {})
    assert browser.status_code == 403
    assert call(server, codex, "tools/list", {}).status_code == 200


# -- the formats -----------------------------------------------------------------------------

HTTP = McpServer(
    "notebook", url="http://127.0.0.1:23456/mcp", headers={"Authorization": "Bearer s"}
)
STDIO = McpServer("files", command="npx", args=("-y", "srv"), env={"A": "1"})


def test_each_harness_gets_the_servers_in_its_own_format():
    import tomllib

    assert claude_config([HTTP, STDIO]) == {
        "mcpServers": {
            "notebook": {
                "type": "http",
                "url": "http://127.0.0.1:23456/mcp",
                "headers": {"Authorization": "Bearer s"},
            },
            "files": {"type": "stdio", "command": "npx", "args": ["-y", "srv"], "env": {"A": "1"}},
        }
    }
    codex = tomllib.loads(codex_config([HTTP, STDIO]))["mcp_servers"]
    assert codex["notebook"]["url"] == HTTP.url
    assert codex["notebook"]["http_headers"] == {"Authorization": "Bearer s"}
    assert codex["files"] == {
        "command": "npx",
        "args": ["-y", "srv"],
        "env": {"A": "1"},
        "startup_timeout_sec": 60,
    }
    assert acp_servers([HTTP, STDIO], http=False) == [
        {
            "name": "files",
            "command": "npx",
            "args": ["-y", "srv"],
            "env": [{"name": "A", "value": "1"}],
        }
    ]
    assert acp_servers([HTTP], http=True)[0]["headers"] == [
        {"name": "Authorization", "value": "Bearer s"}
    ]


def test_mcp_toml_the_notebooks_file_wins_and_mistakes_are_named(tmp_path: Path):
    user, project = tmp_path / "user.toml", tmp_path / "project.toml"
    user.write_text(
        '[servers.docs]\nurl = "https://a.example/mcp"\n[servers.files]\ncommand = "x"\n'
    )
    project.write_text('[servers.docs]\nurl = "https://b.example/mcp"\nheaders = { K = "v" }\n')
    servers = {s.name: s for s in load_servers([user, project, tmp_path / "missing.toml"])}
    assert servers["docs"].url == "https://b.example/mcp" and servers["docs"].headers == {"K": "v"}
    assert servers["files"].command == "x" and not servers["files"].is_http
    for text, message in [
        ('[servers.a]\ncommand = "x"\nurl = "http://h"\n', "either command"),
        ('[servers.notebook]\ncommand = "x"\n', "kernel's own server"),
        ('[servers.a]\nurl = "file:///etc"\n', "http:// or https://"),
        ('[servers.a]\ncommand = "x"\nargs = "y"\n', "args must be a list"),
        ("[other]\n", "unknown key"),
        ("[servers\n", "not valid TOML"),
    ]:
        project.write_text(text)
        with pytest.raises(McpConfigError, match=message):
            load_servers([project])


# -- the policy ------------------------------------------------------------------------------


def tool_request(tool: str, action: str = "other") -> Request:
    return Request(action=action, tool=tool, summary="x = 1")


def test_python_always_asks_and_auto_approval_cannot_answer_it(tmp_path):
    from omnikernel.approvals.decide import decide
    from omnikernel.events import Event, EventKind

    rules = Policy(None, None, tmp_path).rules()
    verdict = judge(rules, PolicyState(), tool_request("notebook.kernel_run", "python"))
    assert verdict.outcome == Outcome.ASK and verdict.rules == ("ask-python",)
    assert not verdict.is_default_ask
    decision = decide(Event(EventKind.APPROVAL_REQUEST, {}), verdict, auto_approve=True)
    assert decision.needs_person
    # A policy turns it off deliberately, then allows the tool by name.
    policy = tmp_path / "p.toml"
    policy.write_text(
        '[[rule]]\nrule = "ask-python"\nenabled = false\n\n'
        '[[rule]]\nrule = "allow-tool"\ntool = "notebook.kernel_run"\n'
    )
    rules = Policy(None, policy, tmp_path).rules()
    verdict = judge(rules, PolicyState(), tool_request("notebook.kernel_run", "python"))
    assert verdict.outcome == Outcome.ALLOW


def test_tool_rules_match_mcp_tools_by_server_and_name(tmp_path):
    assert qualified_tool("mcp__github__create_issue") == "github.create_issue"
    assert qualified_tool("Bash") == "Bash"
    deny = make_rule("deny-tool", ["github.*"], "session")
    ask = make_rule("ask-tool", ["docs.search"], "session")
    allow = make_rule("allow-tool", ["docs.read"], "session")
    rules = [deny, ask, allow]
    assert (
        judge(rules, PolicyState(), tool_request("mcp__github__create_issue")).outcome
        == Outcome.DENY
    )
    asked = judge(rules, PolicyState(), tool_request("mcp__docs__search"))
    assert asked.outcome == Outcome.ASK and not asked.is_default_ask
    assert judge(rules, PolicyState(), tool_request("mcp__docs__read")).outcome == Outcome.ALLOW
    assert judge(rules, PolicyState(), tool_request("mcp__docs__other")).is_default_ask
    with pytest.raises(RuleError, match="needs a tool name"):
        make_rule("deny-tool", [""], "session")


def test_the_open_notebook_is_a_read_only_file_other_notebooks_are_not(tmp_path):
    rule = make_rule("read-only-file", [str(tmp_path / "a.ipynb")], "default")
    write = Request(action="write", tool="Write", paths=(str(tmp_path / "a.ipynb"),))
    other = Request(action="write", tool="Write", paths=(str(tmp_path / "b.ipynb"),))
    assert judge([rule], PolicyState(), write).outcome == Outcome.DENY
    assert judge([rule], PolicyState(), other).is_default_ask
