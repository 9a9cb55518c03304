"""The approval card and the spend gauge with ipywidgets' own harness: `Button.click()` fires
the handlers from Python, as a front end's click message would."""

from __future__ import annotations

import asyncio
from pathlib import Path

from omnikernel.approvals import decide as approval
from omnikernel.approvals.pending import PendingApprovals
from omnikernel.gateway import SpendRecord
from omnikernel.gateway.upstream import UpstreamConfig
from omnikernel.kernel import widgets
from omnikernel.kernel.widgets import FEED_TURNS, ApprovalCard, SessionFeed, SpendGauge, presenter
from omnikernel.session.core import AgentSession
from omnikernel.store.sessions import SessionStore
from omnikernel.store.shares import SharedPrompt

ASK = approval.Decision("ask", "push-after-install: `git push` publishes", "push-after-install",
                        ("push-after-install",), subject="git push")  # fmt: skip
REQUEST = {"request_id": "r1", "tool": "Bash", "action": "exec", "summary": "git push",
           "input": {"command": "git push origin main"}}  # fmt: skip


def test_the_card_shows_the_action_and_a_click_decides_with_scope_and_reason():
    async def scenario():
        approvals = PendingApprovals(timeout_s=30)
        shown: list[dict] = []
        cards: list[ApprovalCard] = []
        approvals.presenters.append(lambda p: cards.append(ApprovalCard(p, approvals, "ana")))
        approvals.presenters.append(presenter(approvals, lambda b, raw: shown.append(b)))
        task = asyncio.ensure_future(approvals.ask("r1", REQUEST, ASK))
        await asyncio.sleep(0)
        (card,) = cards
        assert (
            "git push origin main" in card.action.value and "push-after-install" in card.rule.value
        )
        assert "APPROVAL NEEDED: Bash git push" in shown[0]["text/plain"]  # the text fallback
        card.scope.value = "this session"
        card.reason.value = "release day"
        card.approve.click()
        decision = await task
        await asyncio.sleep(0)
        assert (decision.verdict, decision.by, decision.scope, decision.source) == (
            "allow",
            "ana",
            "session",
            "widget",
        )
        assert "release day" in decision.reason
        assert card.approve.disabled and "approved by ana" in card.outcome.value
        card.deny.disabled = False
        card.deny.click()  # a late click is told so
        assert "too late: already approved by ana" in card.outcome.value

    asyncio.run(scenario())


def test_the_spend_gauge_follows_the_meter(tmp_path: Path):
    session = AgentSession(
        store=SessionStore(tmp_path / "s.sqlite3"),
        session_id="g",
        notebook=str(tmp_path / "n"),
        cwd=tmp_path,
        state_dir=tmp_path / "state",
        upstream_config=UpstreamConfig(),
        budget_usd=2.0,
        user_policy=tmp_path / "none.toml",
    )
    gauge = SpendGauge(session)
    session.spend_listeners.append(gauge.refresh)
    assert gauge.bar.value == 0 and "budget $2.00" in gauge.text()
    record = SpendRecord("claude", "anthropic", "claude-opus-4-8", 10, 1, 0, 0, 0.5)
    session.ledger.add(record)  # what the gateway does, then it calls on_spend
    session._on_spend(record)
    assert gauge.bar.value == 0.5 and gauge.bar.max == 2.0
    assert "$0.5000 spent" in gauge.text() and "claude-opus-4-8" in gauge.rows.value
    session.policy.add("pause-every", ["1"])
    gauge.refresh()
    assert "next pause at $1" in gauge.text()


def test_the_session_feed_keeps_each_turn_apart_and_the_last_turns_only():
    feed = SessionFeed()
    stops: list[int] = []
    for turn in range(FEED_TURNS + 5):
        feed.running(
            SharedPrompt(turn, f"prompt {turn}", "co-drive at 10.0.0.7", "share page"),
            on_stop=lambda turn=turn: stops.append(turn),
        )
        feed.display({"text/plain": f"text {turn}"}, display_id=f"t{turn}")
        feed.update_display({"text/plain": f"text {turn}, more"}, display_id=f"t{turn}")
        feed.display({"text/plain": f"footer {turn}"})
    assert len(feed.turns.children) == FEED_TURNS
    last = [o["data"]["text/plain"] for o in feed.turns.children[-1].outputs]
    n = FEED_TURNS + 4
    owner = widgets._user()
    assert last == [
        f"▶ prompt by co-drive at 10.0.0.7 (share page), run with {owner}'s credentials "
        f"and budget: prompt {n}",
        f"text {n}, more",
        f"footer {n}",
    ]
    assert feed.outputs[0]["data"]["text/plain"].endswith("prompt 5")  # 0-4 dropped
    assert "10.0.0.7" in feed.heading.value and not feed.stop_button.disabled
    feed.stop_button.click()
    assert stops == [n]
    feed.idle()
    assert feed.stop_button.disabled
    feed.stop_button.click()
    assert stops == [n]  # no turn runs: nothing to stop


def test_who_did_what_reaches_history_and_exports(tmp_path: Path, monkeypatch):
    """A co-driver's prompt and approval name the hub user, apart from whose credentials ran
    it: in `%history`'s rows, the exports and the share page."""
    from jupyter_ext.share.render import event_html
    from omnikernel.events import Event, EventKind
    from omnikernel.view.export import to_html, to_markdown

    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    store = SessionStore(tmp_path / "s.sqlite3")
    store.open_session("w", "n.ipynb")
    origin = {"by": "carol", "source": "share page", "runs_as": widgets._user()}
    events = [
        Event(EventKind.TURN_START, {"prompt": "tidy up", **origin}),
        Event(EventKind.APPROVAL_REQUEST, {"request_id": "r", "tool": "Bash", "summary": "ls"}),
        Event(
            EventKind.APPROVAL_DECISION,
            {"request_id": "r", "decision": "allow", "by": "bob", "reason": "approved by bob"},
        ),
        Event(EventKind.TURN_END, {"status": "completed"}),
    ]
    stored = [
        store.append(Event(e.kind, e.data, session_id="w", harness="claude", turn=1))
        for e in events
    ]
    session = AgentSession(
        store=store,
        session_id="w",
        notebook="n.ipynb",
        cwd=tmp_path,
        state_dir=tmp_path / "state",
        upstream_config=UpstreamConfig(),
        user_policy=tmp_path / "none.toml",
    )
    [row] = session.turns()
    assert row["by"] == "carol" and row["decided_by"] == ["bob"]
    said = "carol (share page), run with alice's credentials and budget"
    row_info = store.session("w") or {}
    assert said in to_markdown(row_info, stored)
    assert "carol (share page), run with alice" in to_html(row_info, stored)
    assert "approved by bob" in to_markdown(row_info, stored)
    import io

    from omnikernel.cli.attach import TerminalView

    out = io.StringIO()
    TerminalView(out).show(stored[0])
    assert "from carol, run with alice's credentials and budget" in out.getvalue()
    page = event_html(stored[0])
    assert "from carol, run with alice" in page and "credentials and budget" in page
