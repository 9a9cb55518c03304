"""The fake model speaks the three vendor wire formats well enough for the official SDKs and
the real Claude Code CLI, and follows its script."""

from __future__ import annotations

import json
import os
import subprocess
import time

import anthropic
import openai
import pytest

from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.rehearsal.scenario import Conversation

from .conftest import require_claude

SCENARIO = Scenario.from_dict(
    {
        "rules": [
            {
                "match": "make a file",
                "steps": [
                    {"text": "Writing it.", "tool_calls": [{"action": "shell", "command": "echo hi > out.txt"}]},
                    {"text": "Wrote out.txt."},
                ],
            },
            {"match": "slowly", "steps": [{"text": "one two three four five six", "chunk_delay": 0.2}]},
            {"match": "overloaded", "steps": [{"error": {"status": 529, "type": "overloaded_error", "message": "busy"}}]},
            {"match": "usage please", "steps": [{"text": "ok", "usage": {"input_tokens": 1000, "output_tokens": 50, "cache_read_tokens": 7}}]},
        ]
    }
)  # fmt: skip

SHELL_TOOL_ANTHROPIC = {
    "name": "Bash",
    "description": "run a command",
    "input_schema": {
        "type": "object",
        "properties": {"command": {"type": "string"}, "description": {"type": "string"}},
    },
}
SHELL_TOOL_OPENAI = {
    "type": "function",
    "name": "shell",
    "description": "run a command",
    "parameters": {"type": "object", "properties": {"command": {"type": "array"}}},
}


@pytest.fixture
def server():
    with FakeModelServer(SCENARIO).start_in_thread() as s:
        yield s


def test_anthropic_sdk_streams_text_and_tool_calls(server):
    client = anthropic.Anthropic(base_url=server.base_url, api_key="k")
    with client.messages.stream(
        model="claude-x",
        max_tokens=100,
        tools=[SHELL_TOOL_ANTHROPIC],
        messages=[{"role": "user", "content": "please make a file"}],
    ) as stream:
        deltas = list(stream.text_stream)
        message = stream.get_final_message()
    assert "".join(deltas) == "Writing it." and len(deltas) >= 1
    (tool,) = [b for b in message.content if b.type == "tool_use"]
    assert tool.name == "Bash" and tool.input["command"] == "echo hi > out.txt"
    assert message.stop_reason == "tool_use" and message.usage.output_tokens > 0
    # The next position in the conversation gets the next step.
    follow = client.messages.create(
        model="claude-x",
        max_tokens=100,
        tools=[SHELL_TOOL_ANTHROPIC],
        messages=[
            {"role": "user", "content": "please make a file"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": tool.id, "name": "Bash", "input": tool.input}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": ""}],
            },
        ],
    )
    assert follow.content[0].text == "Wrote out.txt." and follow.stop_reason == "end_turn"


def test_openai_responses_sdk_streaming_and_whole(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="k")
    events = list(
        client.responses.create(
            model="gpt-x", input="please make a file", tools=[SHELL_TOOL_OPENAI], stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    call = next(item for item in final.output if item.type == "function_call")
    assert call.name == "shell" and json.loads(call.arguments)["command"][-1] == "echo hi > out.txt"
    assert final.usage.input_tokens > 0
    whole = client.responses.create(model="gpt-x", input="usage please")
    assert whole.output_text == "ok"
    assert whole.usage.input_tokens == 1000 and whole.usage.input_tokens_details.cached_tokens == 7


def test_openai_chat_sdk_streaming_with_usage_and_tool_calls(server):
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="k")
    tool = {
        "type": "function",
        "function": {
            "name": "bash",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}},
        },
    }
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "please make a file"}],
            tools=[tool],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    args = "".join(
        tc.function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
        for tc in c.choices[0].delta.tool_calls
    )
    assert text == "Writing it." and json.loads(args) == {"command": "echo hi > out.txt"}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    whole = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "usage please"}]
    )
    assert whole.choices[0].message.content == "ok" and whole.usage.prompt_tokens == 1000


def test_error_steps_use_each_format_error_shape(server):
    with pytest.raises(anthropic.APIStatusError) as err:
        anthropic.Anthropic(base_url=server.base_url, api_key="k", max_retries=0).messages.create(
            model="c", max_tokens=5, messages=[{"role": "user", "content": "overloaded?"}]
        )
    assert err.value.status_code == 529 and "busy" in str(err.value)
    with pytest.raises(openai.APIStatusError) as oerr:
        openai.OpenAI(
            base_url=server.base_url + "/v1", api_key="k", max_retries=0
        ).responses.create(model="g", input="overloaded?")
    assert oerr.value.status_code == 529


def test_chunk_delay_spaces_the_stream(server):
    """The server sleeps `chunk_delay` after each frame; four frames (message_start, ping,
    content_block_start, the first text delta) go before the second text delta, so it cannot
    arrive sooner than 0.8 s after the request. Measured from the request, not between two
    arrivals, which a loaded machine can bunch together."""
    client = anthropic.Anthropic(base_url=server.base_url, api_key="k")
    stamps = []
    asked = time.monotonic()
    with client.messages.stream(
        model="c", max_tokens=5, messages=[{"role": "user", "content": "say it slowly"}]
    ) as stream:
        for _ in stream.text_stream:
            stamps.append(time.monotonic())
    assert len(stamps) >= 2 and stamps[-1] - asked >= 0.75


def test_enqueue_goes_first_and_requests_are_logged(server):
    server.enqueue({"text": "queued answer"})
    client = anthropic.Anthropic(base_url=server.base_url, api_key="secret-k")
    first = client.messages.create(
        model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    second = client.messages.create(
        model="c", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert first.content[0].text == "queued answer"
    assert "No rule of its scenario matched" in second.content[0].text  # the fallback
    assert len(server.bodies("/v1/messages")) == 2
    headers = server.requests[0].headers
    assert "secret-k" in headers.get("x-api-key", "") + headers.get("authorization", "")


def test_prompt_ignores_agent_context_and_tool_results():
    from omnikernel.gateway.wire import anthropic_conversation

    conv: Conversation = anthropic_conversation(
        {
            "system": [{"type": "text", "text": "You are an agent.\nWorking directory: /w/p"}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                        {"type": "text", "text": "fix it"},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}],
                },
            ],
        }
    )
    assert (conv.prompt, conv.position, conv.cwd) == ("fix it", 1, "/w/p")


def test_real_claude_cli_runs_a_scripted_tool_call(server, tmp_path):
    claude = require_claude()
    work = tmp_path / "w"
    work.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CLAUDE_CONFIG_DIR": str(tmp_path / "c"),
        "TMPDIR": str(tmp_path),
        "ANTHROPIC_BASE_URL": server.base_url,
        "ANTHROPIC_API_KEY": "k",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "IS_SANDBOX": "1",
    }
    done = subprocess.run(
        [
            claude,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
            "please make a file",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (work / "out.txt").read_text().strip() == "hi"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["type"] == "result" and result["result"] == "Wrote out.txt."


def test_a_deferred_mcp_tool_is_searched_then_called_through_tool_call():
    """Qwen Code's Chat Completions requests: the MCP tool is not offered, only its
    `tool_search` and `tool_call` functions. The scripted step searches first (not an answer:
    the position stays), then calls the tool through `tool_call` by its exact name."""
    import itertools

    from omnikernel.gateway.wire import chat_conversation
    from omnikernel.rehearsal.scenario import build_reply

    tools = [
        {"type": "function", "function": {"name": n, "parameters": {}}}
        for n in ("tool_search", "tool_call", "read_file")
    ]
    step = {"tool_calls": [{"mcp": "notebook.kernel_run", "input": {"code": "1"}}]}
    ids = itertools.count()
    first = chat_conversation({"messages": [{"role": "user", "content": "go"}], "tools": tools})
    searched = build_reply(step, first, 0, ids).tool_calls
    assert [(c.name, c.arguments) for c in searched] == [
        ("tool_search", {"query": "notebook kernel_run"})
    ]
    shown = '<functions>\n<function>{"name":"mcp__notebook__kernel_run","description":""}'
    after = chat_conversation(
        {
            "messages": [
                {"role": "user", "content": "go"},
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "1", "function": {"name": "tool_search"}}],
                },
                {"role": "tool", "tool_call_id": "1", "content": [{"type": "text", "text": shown}]},
            ],
            "tools": tools,
        }
    )
    assert after.position == 0 and after.deferred == {"mcp__notebook__kernel_run"}
    called = build_reply(step, after, 0, ids).tool_calls
    assert [(c.name, c.arguments) for c in called] == [
        ("tool_call", {"name": "mcp__notebook__kernel_run", "arguments": {"code": "1"}})
    ]
