"""The harness contract: what every harness must do, as a pytest suite anyone can run.

Subclass `HarnessContract` in a test module and name your harness (as registered in the
``omnikernel.harnesses`` entry-point group); the suite runs it through a real `AgentSession`
(gateway, sandbox, store) against the scripted fake model::

    from omnikernel.testing.contract import HarnessContract

    class TestMyAgent(HarnessContract):
        harness = "myagent"

Every turn must: open with ``turn_start`` and close with ``turn_end``, in increasing sequence
order; stream text; report usage; show each tool call before its result (same call id), with
the approval asked and honoured in between, allow and deny alike; continue the conversation in
the next turn; and stop when interrupted, leaving the session usable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from omnikernel.events import Event, EventKind
from omnikernel.gateway.upstream import UpstreamConfig
from omnikernel.rehearsal.fake_model import FakeModelServer
from omnikernel.rehearsal.scenario import Scenario
from omnikernel.session.core import AgentSession
from omnikernel.store.sessions import SessionStore

SCENARIO = {
    "rules": [
        {"match": "contract write", "steps": [
            {"text": "Writing the contract file.",
             "tool_calls": [{"action": "shell", "command": "echo contract > contract.txt"}]},
            {"text": "The contract file is written."}]},
        {"match": "contract recall", "steps": [{"text": "You asked me to write a file."}]},
        # 30 s of stream: under load an ACP agent may pass its first text on only seconds late.
        # Numbered: Gemini CLI's loop detection would end a turn that repeats itself.
        {"match": "contract slow",
         "steps": [{"text": " ".join(f"tick{i}" for i in range(600)), "chunk_delay": 0.15}]},
    ]
}  # fmt: skip


class HarnessContract:
    harness: ClassVar[str]
    model: ClassVar[str | None] = None
    sandbox: ClassVar[str] = "auto"

    @pytest.fixture
    def fake_model(self) -> Iterator[FakeModelServer]:
        with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as server:
            yield server

    @pytest.fixture
    def make_session(self, fake_model: FakeModelServer, tmp_path: Path) -> Iterator[Any]:
        sessions: list[AgentSession] = []
        work = tmp_path / "work"
        work.mkdir()

        def make(auto_approve: bool = True) -> AgentSession:
            session = AgentSession(
                store=SessionStore(tmp_path / "store.sqlite3"),
                session_id=f"contract-{len(sessions)}",
                notebook=str(work / "contract.ipynb"),
                cwd=work,
                state_dir=tmp_path / "state",
                upstream_config=UpstreamConfig(
                    anthropic_base_url=fake_model.base_url,
                    anthropic_api_key="contract-key",
                    openai_base_url=fake_model.base_url + "/v1",
                    openai_api_key="contract-key",
                    gemini_base_url=fake_model.base_url,
                    gemini_api_key="contract-key",
                ),
                harness=self.harness,
                model=self.model,
                auto_approve=auto_approve,
                sandbox=self.sandbox,
            )
            if not auto_approve:  # a person who denies every ask, at once
                session.approvals.presenters.append(
                    lambda p: session.approvals.answer(
                        p.request_id, False, by="contract", source="test"
                    )
                )
            sessions.append(session)
            return session

        yield make
        for session in sessions:
            session.kill_now()

    @staticmethod
    async def turn(session: AgentSession, prompt: str) -> list[Event]:
        return [event async for event in session.run_prompt(prompt)]

    def run(self, session: AgentSession, *prompts: str) -> list[list[Event]]:
        async def all_turns() -> list[list[Event]]:
            try:
                return [await self.turn(session, p) for p in prompts]
            finally:
                await session.close()

        return asyncio.run(all_turns())

    @staticmethod
    def kinds(events: list[Event]) -> list[EventKind]:
        return [e.kind for e in events]

    # -- the contract --------------------------------------------------------------------------

    def test_turn_is_ordered_streams_text_and_reports_usage(self, make_session):
        (events,) = self.run(make_session(), "contract recall what I asked")
        kinds = self.kinds(events)
        assert kinds[0] == EventKind.TURN_START and kinds[-1] == EventKind.TURN_END
        assert events[-1].data["status"] == "completed", events
        assert [e.seq for e in events] == sorted(e.seq for e in events)
        assert EventKind.TEXT in kinds and EventKind.USAGE in kinds
        assert kinds.index(EventKind.USAGE) < len(kinds) - 1
        text = "".join(e.data["text"] for e in events if e.kind == EventKind.TEXT)
        assert "You asked me to write a file." in text
        assert EventKind.SPEND in kinds  # the gateway metered the call

    def test_tool_call_approval_then_result(self, make_session):
        session = make_session(auto_approve=True)
        (events,) = self.run(session, "contract write a file")
        assert (session.cwd / "contract.txt").read_text().strip() == "contract"
        calls = [e for e in events if e.kind == EventKind.TOOL_CALL]
        results = [e for e in events if e.kind == EventKind.TOOL_RESULT]
        assert calls and results and calls[0].data["action"] == "exec"
        assert calls[0].data["call_id"] == results[0].data["call_id"]
        decision = next(e for e in events if e.kind == EventKind.APPROVAL_DECISION)
        assert decision.data["decision"] == "allow"
        assert calls[0].seq < decision.seq < results[0].seq
        assert events[-1].data["status"] == "completed"

    def test_denied_tool_does_not_run(self, make_session):
        session = make_session(auto_approve=False)
        (events,) = self.run(session, "contract write a file")
        decision = next(e for e in events if e.kind == EventKind.APPROVAL_DECISION)
        assert decision.data["decision"] == "deny"
        assert (decision.data["by"], decision.data["source"]) == ("contract", "test")
        assert not (session.cwd / "contract.txt").exists()
        assert events[-1].kind == EventKind.TURN_END

    def test_second_turn_continues_the_conversation(self, make_session, fake_model):
        first, second = self.run(make_session(), "contract write a file", "contract recall")
        assert first[-1].data["status"] == "completed" and second[-1].data["status"] == "completed"
        latest = fake_model.requests[-1].body
        assert "contract write a file" in str(latest)  # the model sees the first turn

    def test_a_stop_after_the_turn_ended_changes_nothing(self, make_session):
        """The stop button pressed as the turn ends (the cancel racing its last event): the
        turn stays as it ended and the next prompt is answered at once, by the same CLI."""
        session = make_session()

        async def late_stop() -> tuple[list[Event], list[Event], list[Event]]:
            first = await self.turn(session, "contract recall")
            stopped = await session.stop_turn()
            after = await self.turn(session, "contract recall")
            await session.close()
            return first, stopped, after

        first, stopped, after = asyncio.run(late_stop())
        assert first[-1].data["status"] == "completed"
        assert EventKind.TURN_END not in self.kinds(stopped), stopped
        assert after[-1].data["status"] == "completed", after
        assert EventKind.NOTICE not in self.kinds(after), after  # no "it was restarted"
        ends = session.store.events(session.session_id, kinds=(EventKind.TURN_END,))
        assert [e.data["status"] for e in ends] == ["completed", "completed"]

    def test_interrupt_stops_the_turn_and_the_session_goes_on(self, make_session):
        session = make_session()

        async def interrupted() -> tuple[list[Event], list[Event]]:
            seen: list[Event] = []

            async def consume() -> None:
                async for event in session.run_prompt("contract slow please"):
                    seen.append(event)

            task = asyncio.ensure_future(consume())
            for _ in range(600):
                if any(e.kind == EventKind.TEXT for e in seen):
                    break
                await asyncio.sleep(0.05)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            stopped = await session.stop_turn()
            after = await self.turn(session, "contract recall")
            await session.close()
            return seen + stopped, after

        events, after = asyncio.run(interrupted())
        assert any(e.kind == EventKind.TEXT for e in events), "no text streamed before the stop"
        assert (
            events[-1].kind == EventKind.TURN_END and events[-1].data["status"] == "interrupted"
        ), [(e.kind.value, e.data) for e in events[-4:]]
        streamed = "".join(e.data["text"] for e in events if e.kind == EventKind.TEXT)
        assert streamed.count("tick") < 600
        assert after[-1].data["status"] == "completed", after
