"""Stop means stop: every harness, in every state of a turn, is idle within a second of the stop,
leaves no process of the turn behind (nothing writes a file later), and the next prompt works.

The matrix runs at harness level through a real `AgentSession` (real CLI, real sandbox, one
session per harness shared across the states); the running-command state, the one users hit,
also runs through a real kernel interrupted the way JupyterLab's stop button does it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from omnikernel.events import EventKind
from omnikernel.gateway.upstream import UpstreamConfig
from omnikernel.proc.turnstop import descendants, process_info
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.session.core import AgentSession
from omnikernel.store.sessions import SessionStore
from omnikernel.testing.stopping import (
    LATE_AFTER_S,
    LATE_FILES,
    RECALL,
    RECALL_ANSWER,
    SCENARIO,
    STARTED_FILE,
    STATES,
    hold_approvals,
    stop_in_state,
)

from .conftest import require_cli

#: The promise: the cell is idle within a second of the stop.
STOP_WITHIN_S = 1.0
HARNESSES = {"claude": "claude", "codex": "codex", "pi": "pi", "claude-acp": "claude-code-acp",
             "gemini": "gemini", "qwen": "qwen", "opencode": "opencode"}  # fmt: skip
#: What each state's stop reports having stopped.
STOPPED = {
    "streaming": "the model call",
    "approval": "the approval request",
    "command": "the command",
    "slow-model": "the model call",
}


@pytest.fixture
def model():
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as server:
        yield server


def turn_leftovers(pids: set[int]) -> list[str]:
    """The scripted command's processes among `pids` (its sleeps, its shells)."""
    left = []
    for pid in pids:
        info = process_info(pid)
        if info and not info.zombie and (info.name == "sleep" or ".txt" in info.command):
            left.append(info.command)
    return left


def text_of(events) -> str:
    return "".join(e.data["text"] for e in events if e.kind == EventKind.TEXT)


# Serial: it measures stop latency in each state; with six workers on two cores, a streamed
# answer (30 s) ran out before a harness's first tick reached the stop.
@pytest.mark.serial
@pytest.mark.parametrize("harness", list(HARNESSES))
def test_stop_in_every_state(harness, model, tmp_path):
    require_cli(HARNESSES[harness])
    work = tmp_path / "work"
    work.mkdir()
    store = SessionStore(tmp_path / "store.sqlite3")
    session = AgentSession(
        store=store,
        session_id="stop",
        notebook=str(work / "stop.ipynb"),
        cwd=work,
        state_dir=tmp_path / "state",
        harness=harness,
        auto_approve=True,
        upstream_config=UpstreamConfig(
            anthropic_base_url=model.base_url,
            anthropic_api_key="stop-key",
            openai_base_url=model.base_url + "/v1",
            openai_api_key="stop-key",
            gemini_base_url=model.base_url,
            gemini_api_key="stop-key",
        ),
    )

    async def scenario() -> None:
        first = [e async for e in session.run_prompt(RECALL)]
        assert first[-1].data["status"] == "completed", first
        hold_approvals(session, harness)
        agent = session._harness(harness)
        for state in STATES:
            stopped = await stop_in_state(session, state, model, work)
            end = stopped.end
            assert end.kind == EventKind.TURN_END and end.data["status"] == "interrupted", (
                state,
                [(e.kind.value, str(e.data)[:120]) for e in stopped.events[-6:]],
            )
            assert stopped.latency_s < STOP_WITHIN_S, (state, stopped.latency_s)
            assert end.data["stopped"].startswith(STOPPED[state]), (state, end.data)
            # Nothing of the turn is left in the sandbox: the cgroup holds the agent only.
            left = turn_leftovers(agent._proc.members())
            assert not left, (state, left)
            if state == "command":
                assert "sleep 30" in end.data["stopped"]
                began = (work / STARTED_FILE).stat().st_mtime
                await asyncio.sleep(max(0.0, began + LATE_AFTER_S + 1 - time.time()))
                assert not [f for f in LATE_FILES if (work / f).exists()]
            if state == "approval":
                assert not (work / "approved.txt").exists()
            after = [e async for e in session.run_prompt(RECALL)]
            assert after[-1].data["status"] == "completed", (state, after)
            # No leftovers of the stopped turn in the next one.
            assert text_of(after).strip() == RECALL_ANSWER, (state, text_of(after))
            assert [e.kind for e in after].count(EventKind.TURN_END) == 1
        await session.close()

    try:
        asyncio.run(scenario())
    finally:
        session.kill_now()
    # Each stopped turn is stored once, marked interrupted.
    ends = store.events("stop", kinds=(EventKind.TURN_END,))
    by_turn: dict[int, list[str]] = {}
    for end in ends:
        by_turn.setdefault(end.turn, []).append(end.data["status"])
    assert all(len(v) == 1 for v in by_turn.values()), by_turn
    assert [v[0] for v in by_turn.values()].count("interrupted") == len(STATES)


@pytest.mark.parametrize("harness", list(HARNESSES))
def test_kernel_stops_a_running_command(harness, model, workdir, start_kernel):
    """JupyterLab's stop button (SIGINT to the kernel) while the agent runs a command that left
    a background job and a setsid'd daemon behind."""
    require_cli(HARNESSES[harness])
    kernel = start_kernel(
        workdir,
        OMNIKERNEL_HARNESS=harness,
        OMNIKERNEL_AUTO_APPROVE="1",
        ANTHROPIC_BASE_URL=model.base_url,
        ANTHROPIC_API_KEY="stop-key",
        OPENAI_BASE_URL=model.base_url + "/v1",
        OPENAI_API_KEY="stop-key",
        GOOGLE_GEMINI_BASE_URL=model.base_url,
        GEMINI_API_KEY="stop-key",
    )
    assert kernel.execute(RECALL).status == "ok"
    msg_id = kernel.kc.execute(STATES["command"])
    interrupted_at: list[float] = []

    def stop_when_running() -> None:
        deadline = time.monotonic() + 90
        while not (workdir / STARTED_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        interrupted_at.append(time.monotonic())
        kernel.km.interrupt_kernel()

    stopper = threading.Thread(target=stop_when_running)
    stopper.start()
    result = kernel.collect(msg_id, timeout=120)
    idle_at = time.monotonic()
    stopper.join()
    assert interrupted_at, "the command never started"
    assert result.reply["ename"] == "KeyboardInterrupt", result.text
    assert idle_at - interrupted_at[0] < STOP_WITHIN_S, idle_at - interrupted_at[0]
    assert "interrupted: stopped the command" in result.text and "sleep 30" in result.text
    # No process of the command is left anywhere below the kernel (setsid'd ones included:
    # inside the sandbox they stay below its init).
    left = turn_leftovers(descendants(kernel.km.provisioner.pid))
    assert not left, left
    began = (workdir / STARTED_FILE).stat().st_mtime
    time.sleep(max(0.0, began + LATE_AFTER_S + 1 - time.time()))
    assert not [f for f in LATE_FILES if (workdir / f).exists()]
    after = kernel.execute(RECALL)
    assert after.status == "ok", after.text
    assert RECALL_ANSWER in after.text
    assert "Running the long command" not in after.text and "tick" not in after.text
    history = kernel.execute("%history").text
    assert history.count("interrupted") == 1, history


@pytest.mark.process  # starts processes to kill
def test_killing_strays_keeps_the_agent_and_its_relays(tmp_path: Path):
    """Without a sandbox the scope is the process tree: a turn's command goes, the agent stays."""
    from omnikernel.proc.turnstop import TurnProcesses
    from omnikernel.sandbox.spawn import spawn

    async def scenario() -> None:
        proc = await spawn(
            ["/bin/bash", "-c", 'read line; eval "$line"; sleep 60'],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin"},
        )
        try:
            turn = TurnProcesses(proc.members)
            turn.snapshot()
            proc.stdin.write(b"(sleep 40; touch late.txt) & sleep 50 &\n")
            await proc.stdin.drain()
            for _ in range(200):
                if len(turn.strays()) >= 2:
                    break
                await asyncio.sleep(0.01)
            killed = await turn.kill_strays()
            assert {"sleep 50", "sleep 40"} <= {k.command for k in killed}, killed
            assert not turn.strays()
            assert proc.returncode is None and proc.pid in proc.members()
        finally:
            await proc.kill()

    asyncio.run(scenario())


def test_a_frozen_cgroup_cannot_react_to_the_kill(tmp_path: Path):
    """Signalled one by one, a shell whose child dies first runs its next command before its own
    SIGKILL arrives (how `sleep 4; echo late > late.txt` wrote its file after a stop); with the
    cgroup frozen while it is signalled (as `kill_strays` does), nothing runs in between."""
    import contextlib
    import os
    import signal
    import subprocess

    from omnikernel.sandbox.cgroup import CGroup

    def late_write(freeze: bool) -> bool:
        group = CGroup.create(None, None)
        if group is None or not any((d / "cgroup.freeze").exists() for d in group.dirs):
            if group is not None:
                group.kill()
            pytest.skip("needs a writable cgroup v2 (cgroup.freeze) on this machine")
        late = tmp_path / "late.txt"
        try:
            shell = subprocess.Popen(
                ["sh", "-c", "sleep 30; echo late > late.txt"],
                cwd=tmp_path,
                preexec_fn=group.add_self,
            )
            child = None
            for _ in range(500):
                sleeps = [
                    p
                    for p in group.pids() - {shell.pid}
                    if (i := process_info(p)) and i.name == "sleep"
                ]
                if sleeps:
                    child = sleeps[0]
                    break
                time.sleep(0.01)
            assert child is not None, "the shell never started its sleep"
            with group.frozen() if freeze else contextlib.nullcontext(False) as froze:
                assert froze == freeze
                os.kill(child, signal.SIGKILL)
                time.sleep(0.3)  # the preemption a loaded machine puts between two kills
                os.kill(shell.pid, signal.SIGKILL)
            shell.wait(5)
            return late.exists()
        finally:
            group.kill()
            late.unlink(missing_ok=True)

    assert late_write(freeze=False), "unfrozen, the shell should have run its next command"
    assert not late_write(freeze=True)


def test_strays_are_killed_parents_first():
    from omnikernel.proc.turnstop import ProcessInfo, parents_first

    def info(pid: int, ppid: int) -> ProcessInfo:
        return ProcessInfo(pid, ppid, "sh", "sh", False)

    ordered = parents_first([info(30, 20), info(40, 1), info(20, 10), info(10, 1)])
    assert [i.pid for i in ordered].index(10) < [i.pid for i in ordered].index(20)
    assert [i.pid for i in ordered].index(20) < [i.pid for i in ordered].index(30)
