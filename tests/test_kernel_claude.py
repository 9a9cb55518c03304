"""The Omnigent kernel driving the real Claude Code CLI against the scripted model server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time

import pytest

from omnikernel.gateway import PriceTable
from omnikernel.rehearsal import FakeModelServer, Scenario

from .conftest import require_claude, shown_text

SCRIPTED_USAGE = {"input_tokens": 1200, "output_tokens": 80}
SCENARIO = {
    "rules": [
        {
            "match": "create the notes file",
            "steps": [
                {
                    "text": "I will write the notes file now.",
                    "tool_calls": [{"action": "shell", "command": "echo remembered > notes.txt"}],
                    "usage": SCRIPTED_USAGE,
                },
                {"text": "Created notes.txt with the word remembered.", "usage": SCRIPTED_USAGE},
            ],
        },
        {"match": "which file", "steps": [{"text": "Earlier I created notes.txt for you."}]},
        {"match": "take your time", "steps": [{"text": "word " * 400, "chunk_delay": 0.05}]},
    ]
}


PRICED_MODEL = "claude-sonnet-4-5"


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as server:
        yield server


def upstream(model: FakeModelServer, **extra: str) -> dict[str, str]:
    return {"ANTHROPIC_BASE_URL": model.base_url, "ANTHROPIC_API_KEY": "test-key", **extra}


def message_bodies(model: FakeModelServer) -> list[str]:
    return [str(r.body) for r in model.requests if r.path.startswith("/v1/messages")]


def assert_alive(kernel) -> None:
    result = kernel.execute("%%python\nprint(6 * 7)")
    assert result.status == "ok" and "42" in result.text
    assert kernel.alive()


def test_prompt_runs_a_tool_and_the_next_cell_continues(model, workdir, start_kernel):
    kernel = start_kernel(
        workdir, **upstream(model, OMNIKERNEL_AUTO_APPROVE="1", OMNIKERNEL_MODEL=PRICED_MODEL)
    )
    first = kernel.execute("Please create the notes file.")
    assert first.status == "ok", first.text
    assert (workdir / "notes.txt").read_text().strip() == "remembered"
    text = first.text
    assert "I will write the notes file now." in text
    assert "▶ Bash: echo remembered > notes.txt" in text
    assert "auto-approved" in text  # every auto-approved action says so
    assert "Created notes.txt" in text
    assert "in /" in text and "out tokens" in text  # the footer
    # The cost is metered at the gateway, from the tokens on the wire and the price table.
    price = PriceTable.load().lookup("anthropic", PRICED_MODEL)
    assert price is not None
    per_call = (
        SCRIPTED_USAGE["input_tokens"] * price.input
        + SCRIPTED_USAGE["output_tokens"] * price.output
    ) / 1e6
    assert f"${2 * per_call:.4f}" in text

    second = kernel.execute("Which file did you create?")
    assert second.status == "ok", second.text
    assert "Earlier I created notes.txt" in second.text
    # One long-lived CLI: the second request carries the first turn's conversation.
    assert "create the notes file" in message_bodies(model)[-1]

    history = kernel.execute("%history")
    assert "create the notes file" in history.text and "Which file" in history.text
    kernel.kc.history(hist_access_type="tail", n=10)  # a console's up-arrow finds prompts too
    inputs = [entry[2] for entry in kernel.kc.get_shell_msg(timeout=30)["content"]["history"]]
    assert "Please create the notes file." in inputs
    assert history.text.count("completed") == 2


def test_unanswered_actions_are_denied_with_a_way_to_allow_them(model, workdir, start_kernel):
    # A client without widgets sees the request in text, then the denial at the timeout.
    kernel = start_kernel(workdir, **upstream(model, OMNIKERNEL_APPROVAL_TIMEOUT="3"))
    result = kernel.execute("Please create the notes file.")
    assert not (workdir / "notes.txt").exists()
    assert "APPROVAL NEEDED: Bash echo remembered > notes.txt" in result.text
    assert "DENIED" in result.text and "nobody answered" in result.text
    assert "%autoapprove on" in result.text
    on = kernel.execute("%autoapprove on")
    assert "Auto-approval is on" in on.text
    again = kernel.execute("Please create the notes file.")
    assert again.status == "ok"
    assert (workdir / "notes.txt").exists()


@pytest.mark.serial  # bounds how long the interrupted turn took
def test_interrupt_ends_the_turn_and_keeps_the_kernel(model, workdir, start_kernel):
    kernel = start_kernel(workdir, **upstream(model))
    msg_id = kernel.kc.execute("Please take your time and write a lot.")
    text_seen = threading.Event()

    def on_output(msg):
        if "word" in shown_text(msg):
            text_seen.set()

    def interrupt_when_streaming():
        assert text_seen.wait(60), "no streamed text arrived"
        kernel.km.interrupt_kernel()

    interrupter = threading.Thread(target=interrupt_when_streaming)
    interrupter.start()
    started = time.monotonic()
    result = kernel.collect(msg_id, timeout=90, on_output=on_output)
    interrupter.join()
    assert result.reply["status"] == "error" and result.reply["ename"] == "KeyboardInterrupt"
    assert "interrupted" in result.text
    # The scripted answer takes 20 s to stream; the interrupt cut it short.
    assert time.monotonic() - started < 18
    assert_alive(kernel)
    after = kernel.execute("Which file did you create?")
    assert after.status == "ok", after.text


def test_unknown_magic_and_harness_are_clear_errors(model, workdir, start_kernel):
    kernel = start_kernel(workdir, **upstream(model))
    magic = kernel.execute("%agnet codex")
    assert magic.status == "error" and "Unknown magic %agnet" in magic.text
    assert "%agent" in magic.text
    harness = kernel.execute("%agent nosuch")
    assert harness.status == "error" and "Unknown harness 'nosuch'" in harness.text
    assert "claude" in harness.text
    cell = kernel.execute("%%agent nosuch\nhello")
    assert cell.status == "error" and "Unknown harness 'nosuch'" in cell.text
    empty = kernel.execute("%%agent claude\n")
    assert empty.status == "error" and "no prompt" in empty.text
    assert_alive(kernel)


def test_agent_and_agents_show_the_harness(model, workdir, start_kernel):
    kernel = start_kernel(workdir, **upstream(model))
    current = kernel.execute("%agent")
    assert "claude" in current.text and model.base_url in current.text
    switched = kernel.execute("%agent claude --model claude-sonnet-4-5")
    assert "Switched to claude" in switched.text and "claude-sonnet-4-5" in switched.text
    table = kernel.execute("%agents")
    assert "claude" in table.text and "yes" in table.text and "2.1.197" in table.text
    assert "npm install -g @anthropic-ai/claude-code@2.1.197" in table.text
    # The model switch reaches the wire and keeps the conversation.
    kernel.execute("Which file did you create?")
    assert '"model": "claude-sonnet-4-5"' in message_bodies(model)[-1].replace("'", '"')


def test_missing_claude_binary_is_a_clear_error(workdir, start_kernel, model):
    kernel = start_kernel(workdir, PATH="/usr/bin:/bin", **upstream(model))
    result = kernel.execute("Please create the notes file.")
    assert result.status == "error"
    assert "Claude Code CLI not found" in result.text
    assert "npm install -g @anthropic-ai/claude-code@2.1.197" in result.text
    assert_alive(kernel)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_upstream_is_a_clear_error(workdir, start_kernel):
    require_claude()
    url = f"http://127.0.0.1:{closed_port()}"
    kernel = start_kernel(workdir, ANTHROPIC_BASE_URL=url, ANTHROPIC_API_KEY="k")
    result = kernel.execute("Hello?", timeout=120)
    assert result.status == "error"
    assert "did not answer" in result.text and url in result.text
    assert_alive(kernel)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_killed_agent_is_a_clear_error_and_the_next_turn_resumes(model, workdir, start_kernel):
    kernel = start_kernel(workdir, **upstream(model, OMNIKERNEL_AUTO_APPROVE="1"))
    assert kernel.execute("Please create the notes file.").status == "ok"
    msg_id = kernel.kc.execute("Please take your time and write a lot.")
    streaming = threading.Event()

    def on_output(msg):
        if "word" in shown_text(msg):
            streaming.set()

    def kill_the_agent():
        assert streaming.wait(60), "no streamed text arrived"
        kernel_pid = kernel.km.provisioner.pid
        for pid in descendants(kernel_pid):
            # Killing the sandbox first takes its children with it: they may be gone already.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_the_agent)
    killer.start()
    result = kernel.collect(msg_id, timeout=90, on_output=on_output)
    killer.join()
    assert result.status == "error"
    assert "Claude Code exited unexpectedly" in result.text
    assert_alive(kernel)
    # A new process resumes the same Claude conversation.
    after = kernel.execute("Which file did you create?")
    assert after.status == "ok", after.text
    assert "create the notes file" in message_bodies(model)[-1]


def test_a_restarted_kernel_picks_the_session_up(model, workdir, start_kernel):
    env = upstream(model, OMNIKERNEL_AUTO_APPROVE="1", OMNIKERNEL_SESSION_ID="resilient")
    first = start_kernel(workdir, **env)
    assert first.execute("Please create the notes file.").status == "ok"
    first.stop()

    second = start_kernel(workdir, **env)  # same notebook session, same store
    again = second.execute("Which file did you create?")
    assert again.status == "ok", again.text
    # The new Claude process knows nothing yet: the earlier turn is handed over.
    assert "Handed over to claude: 1 earlier turn by claude" in again.text
    assert "create the notes file" in message_bodies(model)[-1]
    history = second.execute("%history").text
    assert "create the notes file" in history and history.count("completed") == 2
    assert "Session total" in second.execute("%spend").text
