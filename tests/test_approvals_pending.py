"""Pending approvals (`omnikernel.approvals.pending`): the first answer wins and a late one is
told; an unanswered ask is denied at the timeout; a stopped turn closes its ask."""

from __future__ import annotations

import asyncio
import threading

import pytest

from omnikernel.approvals import decide as approval
from omnikernel.approvals.pending import PendingApprovals

ASK = approval.Decision("ask", "default: x needs approval", "default", ("default",))


def test_the_first_answer_wins_and_a_late_one_is_told():
    asyncio.run(first_answer_wins())


async def first_answer_wins():
    approvals = PendingApprovals(timeout_s=30)
    shown = []
    approvals.presenters.append(shown.append)
    task = asyncio.ensure_future(approvals.ask("r1", {"tool": "Bash", "summary": "x"}, ASK))
    await asyncio.sleep(0)
    assert [p.request_id for p in shown] == ["r1"]
    said = []
    answer = threading.Thread(
        target=lambda: said.append(
            approvals.answer("r1", True, by="ana", source="widget", scope="session")
        )
    )
    answer.start()
    answer.join()
    decision = await task
    assert (decision.verdict, decision.by, decision.source, decision.scope) == (
        "allow",
        "ana",
        "widget",
        "session",
    )
    assert said == ["accepted"]
    late = approvals.answer("r1", False, by="bob", source="share")
    assert late == "too late: already approved by ana (widget)"
    assert approvals.answer("nope", True, by="x", source="widget").startswith("no pending")


def test_an_unanswered_ask_is_denied_at_the_timeout():
    approvals = PendingApprovals(timeout_s=0.05)
    decision = asyncio.run(approvals.ask("r2", {"tool": "Bash", "summary": "ls"}, ASK))
    assert (decision.verdict, decision.by, decision.source) == ("deny", "timeout", "timeout")
    assert approvals.answer("r2", True, by="ana", source="widget").startswith("too late")


def test_a_stopped_turn_closes_its_ask():
    async def scenario():
        approvals = PendingApprovals(timeout_s=30)
        seen = []
        approvals.presenters.append(lambda p: p.on_decided.append(seen.append))
        task = asyncio.ensure_future(approvals.ask("r3", {"tool": "Bash"}, ASK))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert [d.by for d in seen] == ["interrupt"]
        assert approvals.answer("r3", True, by="ana", source="widget").startswith("too late")

    asyncio.run(scenario())
