"""Answers given on the share page reach the ask that waits for them.

The share server is another process (the jupyter-server extension, or ``python -m
jupyter_ext.share``); it writes a co-driver's answer to the session store
(`omnikernel.store.shares`). `watch_answers` is an approval presenter: while an ask waits, it
looks there and answers the ask like the card in the cell would (first answer wins).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from omnikernel.approvals.pending import Pending, PendingApprovals
from omnikernel.store.shares import ShareCodes

#: How often a waiting ask looks for an answer from the page (the tap-to-resume floor).
ANSWER_POLL_S = 0.05
#: After a minute of waiting (an approval reopened after a restart waits until answered), an
#: idle kernel looks less often.
SLOW_POLL_AFTER_S, SLOW_POLL_S = 60.0, 0.5


def watch_answers(
    approvals: PendingApprovals, codes: Callable[[], ShareCodes], session_id: Callable[[], str]
) -> Callable[[Pending], None]:
    """A presenter: while an ask waits, answers written by the share page resolve it."""

    def present(pending: Pending) -> None:
        session = session_id()

        async def watch() -> None:
            store = codes()
            began = pending.loop.time()
            while not pending.future.done():
                answer = await asyncio.to_thread(store.take_answer, session, pending.request_id)
                if answer is not None:
                    allow, who, source = answer
                    approvals.answer(pending.request_id, allow, by=who, source=source)
                    return
                slow = pending.loop.time() - began > SLOW_POLL_AFTER_S
                await asyncio.sleep(SLOW_POLL_S if slow else ANSWER_POLL_S)

        task = pending.loop.create_task(watch())
        pending.on_decided.append(lambda _decision: task.cancel())

    return present
