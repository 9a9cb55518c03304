"""Pure parts, as tables: routing, the decision function, magic arguments, rendering, ids."""

from pathlib import Path

import pytest
from IPython.core.error import UsageError

from omnikernel.events import Event, EventKind
from omnikernel.gateway.upstream import PLACEHOLDER_KEY, UpstreamConfig, resolve
from omnikernel.kernel.magics.common import parse_agent_args, table
from omnikernel.kernel.routing import route
from omnikernel.view import render


@pytest.mark.parametrize(
    ("code", "kind", "body", "agent_args", "magic"),
    [
        ("Write a test", "prompt", "Write a test", None, ""),
        ("\n  \nFix the bug\nin main.py\n", "prompt", "Fix the bug\nin main.py", None, ""),
        ("%agent codex", "ipython", "%agent codex", None, "agent"),
        ("%%agent codex --model m\nReview it", "prompt", "Review it", "codex --model m", "agent"),
        ("%%python\nx = 1", "ipython", "x = 1", None, "python"),
        ("!ls -la", "ipython", "!ls -la", None, ""),
        ("%%bash\nls", "ipython", "%%bash\nls", None, "bash"),
        ("%nosuch?", "ipython", "%nosuch?", None, "nosuch"),
        ("", "ipython", "", None, ""),
    ],
)
def test_route(code, kind, body, agent_args, magic):
    r = route(code)
    assert (r.kind, r.body, r.agent_args, r.magic) == (kind, body, agent_args, magic)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", (None, None)),
        ("codex", ("codex", None)),
        ("claude --model claude-opus-4-1", ("claude", "claude-opus-4-1")),
        ("--model=m pi", ("pi", "m")),
    ],
)
def test_parse_agent_args(line, expected):
    args = parse_agent_args(line)
    assert (args.name, args.model) == expected


def test_review_only_in_agent_cells():
    assert parse_agent_args("claude --review", allow_review=True).review
    with pytest.raises(UsageError):
        parse_agent_args("claude --review")


@pytest.mark.parametrize("line", ["a b", "--model", "--bogus x", "'unclosed"])
def test_parse_agent_args_errors_say_usage(line):
    with pytest.raises(UsageError, match="Usage|usage|parse"):
        parse_agent_args(line)


def test_resolve_upstream():
    assert resolve(UpstreamConfig(), "anthropic") is None
    env = {"ANTHROPIC_API_KEY": "sk-real"}
    vendor = resolve(UpstreamConfig().merged_with_env(env), "anthropic")
    assert vendor is not None and vendor.base_url == "https://api.anthropic.com"
    assert vendor.api_key == "sk-real" and not vendor.offline
    gateway = resolve(UpstreamConfig(anthropic_base_url="http://127.0.0.1:9/"), "anthropic")
    assert gateway is not None and gateway.api_key == PLACEHOLDER_KEY
    assert gateway.base_url == "http://127.0.0.1:9"
    configured_wins = UpstreamConfig(anthropic_api_key="cfg").merged_with_env(env)
    assert configured_wins.anthropic_api_key == "cfg"


def test_fence_survives_backticks():
    body = "```\ncode\n```"
    fenced = render.fence(body)
    assert fenced.startswith("````") and fenced.endswith("````")


def test_edit_renders_a_diff():
    bundle = render.tool_call_bundle(
        {
            "tool": "Edit",
            "action": "edit",
            "summary": "/w/a.py",
            "input": {"file_path": "/w/a.py", "old_string": "x = 1\n", "new_string": "x = 2\n"},
        }
    )
    assert "-x = 1" in bundle["text/html"] and "+x = 2" in bundle["text/html"]


def test_footer_has_turns_tokens_cost_and_offline():
    usage = {
        "model": "m",
        "num_turns": 2,
        "input_tokens": 1200,
        "output_tokens": 34,
        "cost_usd": 0.0123,
    }
    line = render.footer_bundle("claude", usage, {"status": "completed", "duration_s": 1.5}, True)
    plain = line["text/plain"]
    for part in ("claude", "2 turns", "1,200 in / 34 out tokens", "$0.0123", "1.5 s", "offline"):
        assert part in plain


def test_rehearsal_turns_show_no_money_wherever_spend_is_shown():
    """The offline rehearsal model's calls cost $0, whatever the CLI priced its tokens at."""
    from jupyter_ext.share.render import event_message
    from omnikernel.session.spend import rehearsal_usage
    from omnikernel.view.export import _spend, gather

    spend = {
        "model": "claude-opus-4-8",
        "input_tokens": 40_000,
        "output_tokens": 900,
        "cost_usd": 0.0,
        "rehearsal": True,
    }
    usage = rehearsal_usage(
        Event(EventKind.USAGE, {"model": "claude-opus-4-8", "cost_usd": 0.2225})
    ).data
    assert usage["cost_usd"] == 0.0 and usage["rehearsal"]
    footer = render.footer_bundle("claude", usage, {"status": "completed"}, True, [spend])
    assert "$0 (rehearsal)" in footer["text/plain"] and "0.2225" not in footer["text/plain"]
    unmetered = render.footer_bundle("claude", usage, {"status": "completed"}, True)
    assert "$0 (rehearsal)" in unmetered["text/plain"]
    priced = {**spend, "cost_usd": 0.0072, "priced_as": "anthropic/claude-sonnet-4-5"}
    assert render.spend_text([priced], None) == (
        "$0.0072 (rehearsal priced as anthropic/claude-sonnet-4-5)"
    )
    message = event_message(Event(EventKind.SPEND, spend, seq=3))
    assert message["rehearsal"] and "$0 (rehearsal)" in message["html"]
    (turn,) = gather([Event(EventKind.SPEND, spend, turn=1)])
    assert _spend(turn).endswith("$0 (rehearsal)")


def test_cell_view_streams_text_into_one_updated_display():
    shown, updated = [], []
    clock = iter([0.0, 0.05, 0.5, 0.6, 1.0, 2.0])
    view = render.CellView(
        lambda b, **kw: shown.append((b, kw)),
        lambda b, **kw: updated.append((b, kw)),
        clock=lambda: next(clock),
    )
    for delta in ("Hel", "lo", " world"):
        view.show(Event(EventKind.TEXT, {"text": delta}))
    view.show(Event(EventKind.TOOL_CALL, {"tool": "Bash", "action": "exec", "summary": "ls"}))
    (first, _tool) = shown
    assert first[0]["text/plain"] == "Hel" and "display_id" in first[1]
    assert updated[-1][0]["text/plain"] == "Hello world"  # the flush shows the whole block
    assert all(u[1]["display_id"] == first[1]["display_id"] for u in updated)


def test_table_escapes_pipes():
    t = table(["a", "b"], [["x|y", 1]])
    assert "<td>x|y</td>" in t["text/html"] and "x|y" in t["text/plain"]


def test_rehearsal_scenario_beside_the_notebook_wins(tmp_path):
    from omnikernel.gateway.upstream import rehearsal_scenario_path

    notebook = tmp_path / "analysis.ipynb"
    assert rehearsal_scenario_path(notebook) is None
    beside = tmp_path / "analysis.rehearsal.json"
    beside.write_text("{}")
    assert rehearsal_scenario_path(notebook) == beside
    assert rehearsal_scenario_path(notebook, "/x/y.json") == Path("/x/y.json")


@pytest.mark.parametrize(
    "tool_input",
    [
        {"file_path": "a.py", "old_string": "x = 1\n", "new_string": "x = 2\n"},  # Claude Code
        {"path": "a.py", "oldText": "x = 1\n", "newText": "x = 2\n"},  # Pi
        {"changes": [{"path": "a.py", "diff": "@@ -1 +1 @@\n-x = 1\n+x = 2"}]},  # Codex
    ],
)
def test_edits_of_every_harness_render_as_a_diff(tool_input):
    bundle = render.tool_call_bundle(
        {"tool": "edit", "action": "edit", "summary": "a.py", "input": tool_input}
    )
    assert "-x = 1" in bundle["text/html"] and "+x = 2" in bundle["text/html"]


def test_metered_spend_mid_stream_does_not_split_the_agent_text():
    shown: list[tuple[dict, dict]] = []
    view = render.CellView(
        lambda b, **kw: shown.append((b, kw)), lambda b, **kw: shown.append((b, kw))
    )
    view.show(Event(EventKind.TEXT, {"text": "Ready for the "}))
    view.show(Event(EventKind.SPEND, {"harness": "pi", "model": "m", "cost_usd": 0.001}))
    view.show(Event(EventKind.USAGE, {"input_tokens": 1, "output_tokens": 1}))
    view.show(Event(EventKind.TEXT, {"text": "next task."}))
    view.flush_text()
    assert shown[-1][0]["text/plain"] == "Ready for the next task."
    assert len({kw.get("display_id") for _, kw in shown}) == 1  # one text block, updated
