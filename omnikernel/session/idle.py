"""Letting agent CLIs go when they cost memory for nothing, and starting them again ahead.

An agent CLI is a long-lived process (150-300 MiB) that keeps the conversation in memory. Two
things stop one between turns, the same way for every harness, and neither loses the
conversation: a stopped CLI is started again at its next use and resumes it, natively (Claude's
``--resume``, Codex's ``thread/resume``, Pi's ``--continue``, an ACP agent's ``session/load``)
or, for a CLI that cannot, by the session's handoff; exactly as after a crash.

- **Idle**: a harness not used for `idle_timeout_s` (no turn, since its last turn ended or its
  start) is stopped. `%agent` away from a CLI that was only started ahead (prewarmed, no turn
  yet) stops it at once: it holds nothing to lose.
- **Recycling**: a CLI that grows with its conversation (Claude Code's heap holds the whole
  transcript, ~0.5 MiB a turn) is restarted after `recycle_after_turns` turns of its process or
  once its processes hold `recycle_after_mib` (a CLI that resumes natively only: one that
  cannot would trade its conversation for the handoff's summary), in idle time: as soon as a turn has ended (its
  end stored; the CLI has nothing left to do for it), and only while no turn of it runs. The
  new process is started right away (the resume's load included), so a prompt written after it
  finds it up, as a prewarmed one; a prompt sent sooner waits for the restart to finish.

A CLI with background processes (a shell or server a turn left running,
`Harness.background_processes`) is never stopped for either reason: its stop would end them.
It is looked at again after another idle period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from omnikernel.harnesses import Harness

if TYPE_CHECKING:
    from omnikernel.session.turns import TurnActivity

log = logging.getLogger(__name__)


class SessionIdle:
    """The idle part of `AgentSession` (a mixin: its state is set by `_init_idle`; the names
    annotated below belong to the other parts)."""

    _harnesses: dict[str, Harness]
    _warming: dict[str, asyncio.Task[None]]
    _activity: dict[str, TurnActivity]

    if TYPE_CHECKING:

        def _harness(self, name: str) -> Harness: ...

    def _init_idle(
        self, idle_timeout_s: float, recycle_after_turns: int, recycle_after_mib: float
    ) -> None:
        #: Seconds without a turn after which a harness's CLI is stopped; 0: never.
        self.idle_timeout_s = idle_timeout_s
        #: Turns of one CLI process, or MiB of its processes, after which it is restarted in
        #: idle time; 0: never.
        self.recycle_after_turns = recycle_after_turns
        self.recycle_after_mib = recycle_after_mib
        self._idle_timers: dict[str, asyncio.TimerHandle] = {}

    # -- when a harness was used -----------------------------------------------------------------

    def _used(self, name: str) -> None:
        """`name`'s turn ended (or its CLI came up): its idle period starts again now, and a
        recycle that is due is scheduled."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._arm_idle(name, loop)
        agent = self._harnesses.get(name)
        if agent is not None and self._recycle_due(agent):
            loop.call_soon(self._recycle_if_idle, name)

    def _arm_idle(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        if (timer := self._idle_timers.pop(name, None)) is not None:
            timer.cancel()
        if self.idle_timeout_s > 0:
            self._idle_timers[name] = loop.call_later(self.idle_timeout_s, self._stop_if_idle, name)

    def _cancel_idle_timers(self) -> None:
        for timer in self._idle_timers.values():
            timer.cancel()
        self._idle_timers.clear()

    def _busy(self, name: str, agent: Harness) -> bool:
        """Whether `name` must not be stopped now: a turn runs, its CLI is starting or
        stopping, or it left processes running."""
        task = self._warming.get(name)
        if name in self._activity or (task is not None and not task.done()):
            return True
        if background := agent.background_processes():
            log.info(
                "%s is idle but keeps %d background process(es) running: left alone",
                name,
                len(background),
            )
            return True
        return False

    # -- idle ------------------------------------------------------------------------------------

    def _stop_if_idle(self, name: str) -> None:
        self._idle_timers.pop(name, None)
        agent = self._harnesses.get(name)
        if agent is None or not agent.running:
            return
        if self._busy(name, agent):
            if name not in self._activity:  # a turn's end arms it again; else look again later
                self._arm_idle(name, asyncio.get_running_loop())
            return
        self._run_stop(name, agent, "idle-stop", restart=False)

    def stop_unused(self, name: str) -> None:
        """Stop `name`'s CLI now if it was only started ahead and never ran a turn (`%agent`
        away from a prewarmed harness): it holds no conversation, only memory."""
        agent = self._harnesses.get(name)
        if agent is None or not agent.running or agent.turns_in_process:
            return
        with contextlib.suppress(RuntimeError):  # outside a running loop: left to idle
            asyncio.get_running_loop()
            if not self._busy(name, agent):
                self._run_stop(name, agent, "idle-stop", restart=False)

    # -- recycling -------------------------------------------------------------------------------

    def _recycle_due(self, agent: Harness) -> bool:
        if not agent.running or not agent.turns_in_process or not agent.resumes():
            return False  # (a CLI that cannot resume would trade its context for a handoff)
        if self.recycle_after_turns and agent.turns_in_process >= self.recycle_after_turns:
            return True
        return bool(self.recycle_after_mib) and agent.memory_mib() >= self.recycle_after_mib

    def _recycle_if_idle(self, name: str) -> None:
        agent = self._harnesses.get(name)
        if agent is None or not self._recycle_due(agent) or self._busy(name, agent):
            return  # a turn runs: its end looks again
        self._run_stop(name, agent, "recycle", restart=True)

    def _run_stop(self, name: str, agent: Harness, why: str, restart: bool) -> None:
        """Stop `agent`'s CLI (and with `restart`, start it again, resuming) as a task the next
        turn of `name` waits for (`_warmed`), like a prewarm."""
        before = agent.memory_mib()
        turns = agent.turns_in_process

        async def stop() -> None:
            try:
                await agent.close()
                if restart:
                    ensure_started = getattr(agent, "ensure_started", None)
                    if ensure_started is not None:
                        await ensure_started()
                    self._used(name)
            except Exception as exc:  # the next prompt starts it again and says what failed
                log.warning("%s of %s failed: %r", why, name, exc)
            log.info(
                "%s %s after %d turn(s) at %.0f MiB%s",
                why,
                name,
                turns,
                before,
                f"; now {agent.memory_mib():.0f} MiB" if restart else "",
            )

        self._warming[name] = asyncio.get_running_loop().create_task(stop())
