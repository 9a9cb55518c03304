"""Idle agents cost nothing: a CLI nobody uses is stopped and resumes at its next prompt, unless
it keeps background processes; `%agent` away from a CLI only started ahead stops it; a new
kernel starts the CLI of the agent its session used last; a long-lived CLI is recycled between
turns and the next turn keeps the conversation (see `omnikernel.session.idle`)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from benchmarks.turns import descendants
from omnikernel.testing import FakeModelServer, Scenario

from .conftest import require_cli
from .test_prewarm import assert_same_cli, cli_pids, comm_of, model_calls, wait_for_cli

SCENARIO = {
    "rules": [
        {
            "match": "remember the word",
            "steps": [
                {
                    "text": "Writing it down.",
                    "tool_calls": [{"action": "shell", "command": "echo heliotrope > word.txt"}],
                },
                {"text": "Noted: the word is heliotrope."},
            ],
        },
        {"match": "which word", "steps": [{"text": "The word was heliotrope."}]},
        {
            "match": "start the watcher",
            "steps": [
                {
                    "text": "Starting it in the background.",
                    "tool_calls": [
                        {"action": "shell", "command": "(sleep 300 >/dev/null 2>&1 &); echo ok"}
                    ],
                },
                {"text": "The watcher runs."},
            ],
        },
        {"match": "say hello", "steps": [{"text": "Hello again."}]},
    ]
}
#: The request paths that carry each CLI's conversation.
CONVERSATION_PATHS = {"claude": "/v1/messages", "codex": "/v1/responses", "pi": "/v1/messages"}


def environment(model: FakeModelServer, **extra: str) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "OPENAI_BASE_URL": model.base_url + "/v1",
        "OPENAI_API_KEY": "test-key",
        "OMNIKERNEL_AUTO_APPROVE": "1",
        **extra,
    }


def clis(kernel_pid: int, harness: str) -> set[int]:
    """The kernel's descendants running `harness`'s CLI (Pi, once up, is titled ``pi``)."""
    found = cli_pids(kernel_pid, harness)
    if harness == "pi":
        found |= {p for p in descendants(kernel_pid) if comm_of(p) == "pi"}
    return found


def wait_until_gone(kernel_pid: int, harness: str, timeout: float) -> float:
    """Seconds until no `harness` CLI runs below the kernel (fails after `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not clis(kernel_pid, harness):
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"{harness}'s CLI still runs after {timeout} s")


def last_conversation(model: FakeModelServer, harness: str) -> str:
    bodies = [str(r.body) for r in model.requests if r.path == CONVERSATION_PATHS[harness]]
    assert bodies, f"no {harness} model request"
    return bodies[-1]


@pytest.mark.parametrize("harness", ["claude", "codex", "pi"])
def test_an_idle_cli_is_stopped_and_the_next_prompt_resumes_its_conversation(
    harness, workdir, start_kernel
):
    require_cli(harness)
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as model:
        kernel = start_kernel(
            workdir,
            **environment(model, OMNIKERNEL_HARNESS=harness, OMNIKERNEL_IDLE_HARNESS_TIMEOUT="3"),
        )
        kernel_pid = kernel.km.provisioner.pid
        first = kernel.execute("Please remember the word heliotrope.", timeout=180)
        assert first.status == "ok" and "Noted" in first.text, first.text
        assert (workdir / "word.txt").read_text() == "heliotrope\n"  # a turn with a command
        assert clis(kernel_pid, harness), "the CLI runs after its turn"
        wait_until_gone(kernel_pid, harness, timeout=60)
        assert kernel.execute("%%python\nprint(6 * 7)").text.strip() == "42"

        again = kernel.execute("Now, which word was it?", timeout=180)
        assert again.status == "ok", again.text
        assert "The word was heliotrope." in again.text
        assert "remember the word heliotrope" in last_conversation(model, harness), (
            "the restarted CLI lost the conversation"
        )
        assert clis(kernel_pid, harness), "the prompt started the CLI again"


def test_an_idle_cli_with_a_background_shell_is_left_running(workdir, start_kernel):
    require_cli("claude")
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as model:
        kernel = start_kernel(workdir, **environment(model, OMNIKERNEL_IDLE_HARNESS_TIMEOUT="2"))
        kernel_pid = kernel.km.provisioner.pid
        cell = kernel.execute("Please start the watcher.", timeout=180)
        assert cell.status == "ok" and "The watcher runs." in cell.text, cell.text
        watchers = [p for p in descendants(kernel_pid) if comm_of(p) == "sleep"]
        assert watchers, "the background shell's command is not running"
        cli = cli_pids(kernel_pid, "claude")
        time.sleep(8)  # four idle periods
        assert cli and cli <= cli_pids(kernel_pid, "claude"), (
            "the CLI was stopped although a background shell of its turn still ran"
        )
        for pid in watchers:  # once it ends, the CLI is let go at the next look
            os.kill(pid, signal.SIGKILL)
        wait_until_gone(kernel_pid, "claude", timeout=60)


def test_switching_away_from_a_cli_only_started_ahead_stops_it(workdir, start_kernel):
    require_cli("claude")
    require_cli("codex")
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as model:
        kernel = start_kernel(workdir, **environment(model))
        kernel_pid = kernel.km.provisioner.pid
        wait_for_cli(kernel_pid, "claude")
        assert kernel.execute("%agent codex").status == "ok"
        wait_until_gone(kernel_pid, "claude", timeout=30)
        warm = wait_for_cli(kernel_pid, "codex")
        tree = set(descendants(kernel_pid))
        cell = kernel.execute("Please say hello.", timeout=180)
        assert "Hello again." in cell.text, cell.text
        assert_same_cli(kernel_pid, warm, tree)
        assert not cli_pids(kernel_pid, "claude")


def test_a_new_kernel_starts_the_cli_its_session_used_last(workdir, start_kernel):
    require_cli("claude")
    require_cli("codex")
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as model:
        env = environment(model, OMNIKERNEL_SESSION_ID="went-on-with-codex")
        first = start_kernel(workdir, **env)
        assert first.execute("%agent codex").status == "ok"
        cell = first.execute("Please remember the word heliotrope.", timeout=180)
        assert "Noted" in cell.text, cell.text
        first.stop()

        second = start_kernel(workdir, **env)  # configured default: claude
        kernel_pid = second.km.provisioner.pid
        warm = wait_for_cli(kernel_pid, "codex")
        assert not cli_pids(kernel_pid, "claude"), "the default harness was started too"
        calls = len(model_calls(model))
        time.sleep(1)
        assert len(model_calls(model)) == calls, "starting ahead made a model call"
        tree = set(descendants(kernel_pid))
        again = second.execute("Now, which word was it?", timeout=180)
        assert again.status == "ok", again.text
        assert "Continuing with codex" in again.text
        assert "The word was heliotrope." in again.text
        assert_same_cli(kernel_pid, warm, tree)
        assert "remember the word heliotrope" in last_conversation(model, "codex")


def test_claude_is_recycled_between_turns_and_keeps_the_conversation(workdir, start_kernel):
    require_cli("claude")
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as model:
        kernel = start_kernel(workdir, **environment(model, OMNIKERNEL_RECYCLE_AFTER_TURNS="2"))
        kernel_pid = kernel.km.provisioner.pid
        assert "Noted" in kernel.execute("Please remember the word heliotrope.", timeout=180).text
        old = cli_pids(kernel_pid, "claude")
        assert old
        assert "Hello again." in kernel.execute("Please say hello.", timeout=180).text
        calls = len(model_calls(model))
        # After its second turn, in idle time, the CLI is restarted (resuming) ahead of the
        # next prompt.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (old & cli_pids(kernel_pid, "claude")):
            time.sleep(0.2)
        assert not old & cli_pids(kernel_pid, "claude"), "the CLI was not recycled"
        new = wait_for_cli(kernel_pid, "claude")
        assert new and not new & old
        assert len(model_calls(model)) == calls, "the restart made a model call"
        tree = set(descendants(kernel_pid))
        again = kernel.execute("Now, which word was it?", timeout=180)
        assert again.status == "ok" and "The word was heliotrope." in again.text, again.text
        assert "Handed over" not in again.text, "claude resumes natively, with no handoff"
        assert "remember the word heliotrope" in last_conversation(model, "claude")
        assert_same_cli(kernel_pid, new, tree)


def test_the_version_check_reads_the_npm_manifest_without_starting_the_cli(tmp_path):
    """The first prompt of a harness checks its CLI's version: from its npm package's manifest,
    not by running `--version` (pi's start alone is 1.5-3 s), still warning of another one."""
    import asyncio
    import json

    from omnikernel.harnesses.claude import ClaudeHarness
    from omnikernel.session.turns import version_warning

    package = tmp_path / "node_modules" / "@anthropic-ai" / "claude-code"
    (package / "bin").mkdir(parents=True)
    ran = tmp_path / "ran.txt"
    binary = package / "bin" / "claude.exe"
    binary.write_text(f"#!/bin/sh\necho ran > {ran}\necho 9.9.9\n")
    binary.chmod(0o755)
    manifest = {"name": ClaudeHarness.npm_package, "version": "2.0.1"}
    (package / "package.json").write_text(json.dumps(manifest))

    warning = asyncio.run(version_warning(ClaudeHarness, str(binary)))
    assert warning is not None and "is 2.0.1; omnikernel is tested with" in warning
    manifest["version"] = ClaudeHarness.pinned_version
    (package / "package.json").write_text(json.dumps(manifest))
    assert asyncio.run(version_warning(ClaudeHarness, str(binary))) is None
    assert not ran.exists(), "the CLI was started to learn its version"


def test_a_session_learnt_after_the_start_goes_on_with_its_last_agent(tmp_path):
    """JupyterLab names the notebook after its kernel started: the session adopted at the first
    cell goes on with the agent of its last turn too, and the first prompt cell says so."""
    from omnikernel.events import Event, EventKind
    from omnikernel.gateway.upstream import UpstreamConfig
    from omnikernel.session.core import AgentSession
    from omnikernel.session.identity import Identity
    from omnikernel.store.sessions import SessionStore

    store = SessionStore(tmp_path / "s.sqlite3")
    store.open_session("went-on", "n.ipynb")
    store.start_turn(
        Event(EventKind.TURN_START, {"prompt": "hello", "model": "gpt-5.5"}).stamped(
            session_id="went-on", harness="codex", cell="c1"
        )
    )
    session = AgentSession(
        store=store,
        session_id="per-run",
        notebook=str(tmp_path / "n"),
        cwd=tmp_path,
        state_dir=tmp_path / "state",
        upstream_config=UpstreamConfig(),
        user_policy=tmp_path / "none.toml",
    )
    try:
        assert session.current == "claude" and session.last_harness() is None
        session.adopt(Identity("went-on", "n.ipynb", "file-id-1", "bound"))
        assert session.current == "codex" and session.model_of("codex") == "gpt-5.5"
        assert session.first_notice and "Continuing with codex" in session.first_notice
    finally:
        session.kill_now()


class _Grown:
    """A CLI as recycling sees it: running, its turns, its memory, whether it resumes."""

    def __init__(self, turns: int, mib: float, resumes: bool = True):
        self.running, self.turns_in_process, self._mib, self._resumes = True, turns, mib, resumes

    def memory_mib(self) -> float:
        return self._mib

    def resumes(self) -> bool:
        return self._resumes


def test_recycling_is_due_after_n_turns_or_m_mib_and_only_for_a_cli_that_resumes():
    from omnikernel.session.idle import SessionIdle

    idle = SessionIdle()
    idle._init_idle(idle_timeout_s=0, recycle_after_turns=60, recycle_after_mib=300)
    due = idle._recycle_due
    assert not due(_Grown(turns=59, mib=299))
    assert due(_Grown(turns=60, mib=200))
    assert due(_Grown(turns=3, mib=300))
    assert not due(_Grown(turns=0, mib=900)), "a CLI only started ahead has nothing to shed"
    assert not due(_Grown(turns=80, mib=900, resumes=False)), "it would lose its context"
    idle._init_idle(idle_timeout_s=0, recycle_after_turns=0, recycle_after_mib=0)
    assert not due(_Grown(turns=10_000, mib=10_000))
