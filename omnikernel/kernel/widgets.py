"""What a person sees and clicks in the cell: the approval card, the spend gauge and the session
feed (where co-drivers' turns show).

Stock ipywidgets, no custom JavaScript. The logic lives elsewhere (`approvals` decides who
answered first, the session meters spend); these classes only show it and forward clicks. A
click arrives as a comm message while the cell still runs (ipykernel >= 7.4 dispatches comms
during an async cell); the handler answers the pending future, never polls.

Every display carries a text/plain fallback, so front ends without widgets (nbclient,
`jupyter console`) print the request; how it was decided is printed as the cell's approval line.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from omnikernel.kernel.hub import current_user
from omnikernel.view.render import edit_diff, preview
from omnikernel.view.sanitize import agent_bundle

if TYPE_CHECKING:
    from omnikernel.approvals.decide import Decision
    from omnikernel.approvals.pending import Pending, PendingApprovals
    from omnikernel.policy.rules import PauseEvery
    from omnikernel.session.core import AgentSession
    from omnikernel.store.shares import SharedPrompt

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
SCOPE_LABELS = {"this once": "once", "this session": "session", "always for this pattern": "always"}
#: A network ask's: "always" is written for its host to the project policy file.
HOST_SCOPE_LABELS = {
    "this once": "once",
    "this session": "session",
    "always for this host": "always",
}


def widget_bundle(widget: w.Widget, text: str) -> dict[str, Any]:
    """A display bundle: the widget where widgets render, `text` everywhere else."""
    return {
        "text/plain": text,
        WIDGET_MIME: {"version_major": 2, "version_minor": 0, "model_id": widget.model_id},
    }


def request_text(pending: Pending) -> str:
    """The ask in plain text (consoles, nbclient, logs)."""
    data, asked = pending.request, pending.asked
    if pending.is_pause:
        head = f"⏸ PAUSED: {asked.reason}"
    elif data.get("action") == "network":
        head = f"⚠ NETWORK: {data.get('summary', '')}\n  rule: {asked.reason}"
    else:
        head = f"⚠ APPROVAL NEEDED: {data.get('tool', '?')} {data.get('summary', '')}".rstrip()
        head += f"\n  rule: {asked.reason}"
    return head + "\n  (waiting for a person: Approve or Deny in the notebook)"


def action_html(data: dict[str, Any]) -> str:
    """The action in full: the whole command, or the file and its diff or new content."""
    action, tool_input = data.get("action"), data.get("input") or {}
    summary = str(data.get("summary") or "")
    body = ""
    if action == "exec":
        command = tool_input.get("command", summary) if isinstance(tool_input, dict) else summary
        body = str(command)
    elif action == "edit":
        body = edit_diff(data) or summary
    elif action == "network":
        body = summary
    elif action == "write" and isinstance(tool_input.get("content"), str):
        body = f"{summary}\n\n{preview(tool_input['content'], 40)}"
    else:
        body = summary
    title = f"<b>{html.escape(str(data.get('tool', '')))}</b> ({html.escape(str(action))})"
    pre = (
        "<pre style='white-space:pre-wrap;max-height:20em;overflow:auto;margin:4px 0'>"
        f"{html.escape(body)}</pre>"
    )
    return title + pre


class ApprovalCard(w.VBox):
    """One ask: the action, the rule that asked, Approve / Deny, the scope and a reason."""

    def __init__(self, pending: Pending, approvals: PendingApprovals, who: str):
        self.pending, self.approvals, self.who = pending, approvals, who
        asked = pending.asked
        kind = "Pause" if pending.is_pause else "Approval needed"
        self.header = w.HTML(f"<b>{'⏸' if pending.is_pause else '⚠'} {kind}</b>")
        self.action = w.HTML(action_html(pending.request) if not pending.is_pause else "")
        self.rule = w.HTML(f"<i>Rule:</i> {html.escape(asked.reason)}")
        self.labels = (
            HOST_SCOPE_LABELS if pending.request.get("action") == "network" else SCOPE_LABELS
        )
        self.scope = w.ToggleButtons(
            options=list(self.labels),
            value="this once",
            description="Scope",
            style={"button_width": "auto"},
        )
        self.reason = w.Text(placeholder="reason (optional)", layout=w.Layout(width="30em"))
        self.approve = w.Button(
            description="Continue" if pending.is_pause else "Approve",
            button_style="success",
            icon="check",
        )
        self.deny = w.Button(
            description="Stop" if pending.is_pause else "Deny", button_style="danger", icon="times"
        )
        self.outcome = w.HTML("")
        self.approve.on_click(lambda _: self._answer(True))
        self.deny.on_click(lambda _: self._answer(False))
        pending.on_decided.append(self.show_decision)
        rows: list[w.Widget] = [self.header]
        if not pending.is_pause:
            rows += [self.action, self.rule, self.scope]
        else:
            rows.append(self.rule)
        rows += [w.HBox([self.approve, self.deny, self.reason]), self.outcome]
        super().__init__(rows, layout=w.Layout(border="1px solid #c0a000", padding="6px"))

    def _answer(self, allow: bool) -> None:
        scope = self.labels.get(str(self.scope.value), "once")
        said = self.approvals.answer(
            self.pending.request_id,
            allow,
            by=self.who,
            source="widget",
            scope=scope,
            reason=self.reason.value.strip(),
        )
        if said != "accepted":
            self.outcome.value = f"<i>{html.escape(said)}</i>"

    def show_decision(self, decision: Decision) -> None:
        """The outcome and who decided; the buttons are done."""
        for control in (self.approve, self.deny, self.scope, self.reason):
            control.disabled = True
        mark = "✓" if decision.allow else "✗"
        color = "green" if decision.allow else "#b00"
        self.outcome.value = f"<b style='color:{color}'>{mark} {html.escape(decision.reason)}</b>"


def presenter(
    approvals: PendingApprovals, display: Callable[..., Any]
) -> Callable[[Pending], None]:
    """Shows each ask in the running cell as a card, and (for pauses, network asks and pushes
    the broker read, which no harness event reports) the outcome as a line of text."""
    who = _user()

    def present(pending: Pending) -> None:
        card = ApprovalCard(pending, approvals, who)
        display(widget_bundle(card, request_text(pending)), raw=True)
        if pending.is_pause:

            def said(decision: Decision) -> None:
                mark = "continued" if decision.allow else "stopped"
                display(
                    {
                        "text/plain": f"pause: {mark} — {decision.reason}",
                        "text/markdown": f"**⏸ pause: {mark}** — "
                        + decision.reason.replace("$", "\\$"),
                    },
                    raw=True,
                )

            pending.on_decided.append(said)
        elif pending.request.get("action") == "network":
            target = pending.request.get("input") or {}
            where = f"{target.get('host', '?')}:{target.get('port', '?')}"

            def connected(decision: Decision) -> None:
                # The host came from the sandbox: rendered as agent Markdown (sanitized).
                mark = "opened" if decision.allow else "refused"
                display(
                    agent_bundle(
                        f"**network: `{where}` {mark}** — " + decision.reason.replace("$", "\\$"),
                        f"network: {where} {mark} — {decision.reason}",
                    ),
                    raw=True,
                )

            pending.on_decided.append(connected)
        elif pending.request.get("action") == "push":
            what = str(pending.request.get("summary") or "")

            def pushed(decision: Decision) -> None:
                # Branch names came from the sandbox: rendered as agent Markdown (sanitized).
                mark = "let through" if decision.allow else "refused"
                display(
                    agent_bundle(
                        f"**git push {what} {mark}** — " + decision.reason.replace("$", "\\$"),
                        f"git push {what} {mark} — {decision.reason}",
                    ),
                    raw=True,
                )

            pending.on_decided.append(pushed)

    return present


def _user() -> str:
    return current_user()


class SpendGauge(w.VBox):
    """The session's spend against the budget and the next pause, in USD and in tokens, per
    harness and model, and the usage limits the upstreams report; updated as the gateway
    meters each call."""

    def __init__(self, session: AgentSession):
        self.session = session
        self.bar = w.FloatProgress(
            value=0.0, min=0.0, max=1.0, description="spend", layout=w.Layout(width="30em")
        )
        #: Shown when a token budget or a token pause is set.
        self.token_bar = w.FloatProgress(
            value=0.0,
            min=0.0,
            max=1.0,
            description="tokens",
            layout=w.Layout(width="30em", display="none"),
        )
        #: The most used window of the usage limits an upstream reported (none: hidden).
        self.limit_bar = w.FloatProgress(
            value=0.0,
            min=0.0,
            max=100.0,
            description="limit",
            layout=w.Layout(width="30em", display="none"),
        )
        self.label = w.HTML()
        self.token_label = w.HTML()
        self.limit_label = w.HTML()
        self.rows = w.HTML()
        self.limits = w.HTML()
        super().__init__(
            [
                w.HBox([self.bar, self.label]),
                w.HBox([self.token_bar, self.token_label]),
                w.HBox([self.limit_bar, self.limit_label]),
                self.rows,
                self.limits,
            ]
        )
        self.refresh()

    def _pauses(self) -> list[PauseEvery]:
        from omnikernel.policy.rules import PauseEvery

        return [r for r in self.session.rules() if isinstance(r, PauseEvery)]

    def text(self) -> str:
        session = self.session
        state = session.live_state()
        ledger = session.ledger
        spent = f"${state.spent_usd:.4f} spent"
        if ledger.only_rehearsal:
            spent = "$0 spent (rehearsal)"  # the offline model's calls cost nothing
        elif ledger.rehearsal:
            spent += f" ({ledger.rehearsal} rehearsal call(s) at $0)"
        parts = [spent, f"{state.spent_tokens:,} tokens"]
        parts += [f"budget {cap.show()}" for cap in session.budget.limits()]
        parts += [rule.state_text(state).split("; ")[-1] for rule in self._pauses()]
        if session.ledger.unpriced:
            parts.append(f"{session.ledger.unpriced} unpriced call(s)")
        for upstream, limits in sorted(session.usage_limits().items()):
            parts.append(
                f"{', '.join(sorted(limits.harnesses)) or upstream} limits: {limits.text()}"
            )
        return " · ".join(parts)

    @staticmethod
    def _scale(spent: float, cap: float | None, pauses: list[float]) -> float:
        """The bar's full length: the cap, else the next pause, else what is spent."""
        if cap:
            return cap
        if pauses:
            return min(pauses)
        return max(spent, 1e-9)

    def refresh(self, *_: Any) -> None:
        from omnikernel.policy.amounts import TOKENS

        session = self.session
        state = session.live_state()
        budget = session.budget
        pauses = self._pauses()
        usd_pauses = [p.next_pause(state) for p in pauses if p.amount.unit != TOKENS]
        token_pauses = [p.next_pause(state) for p in pauses if p.amount.unit == TOKENS]
        spent, limit = state.spent_usd, budget.limit_usd
        self.bar.max = max(self._scale(spent, limit, usd_pauses), 1e-9)
        self.bar.value = min(spent, self.bar.max)
        self.bar.bar_style = "danger" if limit and spent >= limit else "info"
        self.label.value = html.escape(self.text())
        tokens, token_limit = state.spent_tokens, budget.limit_tokens
        shown = token_limit is not None or bool(token_pauses)
        self.token_bar.layout.display = None if shown else "none"
        self.token_bar.max = max(self._scale(tokens, token_limit, token_pauses), 1e-9)
        self.token_bar.value = min(tokens, self.token_bar.max)
        self.token_bar.bar_style = "danger" if token_limit and tokens >= token_limit else "info"
        self.token_label.value = (
            html.escape(
                f"{tokens:,} tokens"
                + (f" of {token_limit:,}" if token_limit else "")
                + "".join(f" · next pause at {p:,.0f}" for p in token_pauses)
            )
            if shown
            else ""
        )
        rows = session.ledger.by_harness_and_model()
        self.rows.value = "".join(
            f"<div><code>{html.escape(r.harness)}</code> {html.escape(r.model)}: {r.requests} "
            f"call(s), {r.tokens:,} tokens, {html.escape(r.cost_text())}</div>"
            for r in rows
        )
        reported = session.usage_limits()
        most = [(lim, lim.most_used) for lim in reported.values() if lim.most_used is not None]
        if most:
            limits, window = max(most, key=lambda lw: lw[1].used_percent or 0.0)
            assert window is not None and window.used_percent is not None
            self.limit_bar.layout.display = None
            self.limit_bar.value = min(max(window.used_percent, 0.0), 100.0)
            self.limit_bar.bar_style = (
                "danger"
                if window.used_percent >= 90
                else ("warning" if window.used_percent >= 75 else "info")
            )
            who = ", ".join(sorted(limits.harnesses)) or limits.upstream
            self.limit_label.value = html.escape(
                f"{who}: {window.name} {window.used_percent:.0f}% used"
            )
        else:
            self.limit_bar.layout.display = "none"
            self.limit_label.value = ""
        self.limits.value = "".join(
            f"<div>usage limits of <code>{html.escape(upstream)}</code> "
            f"({html.escape(', '.join(sorted(lim.harnesses)))}): {html.escape(lim.text())}</div>"
            for upstream, lim in sorted(reported.items())
        )


FEED_IDLE = "<b>Session feed</b> · prompts co-drivers send from the share page run here"
#: Turns the feed keeps on screen (the oldest go first); the store keeps every event.
FEED_TURNS = 20


class SessionFeed(w.VBox):
    """Turns that no cell started (co-drivers' prompts) show here. A display shows only under
    the request that made it, so a front end drops what a kernel sends once its cell ended;
    an Output widget's outputs are state synced over its comm, shown whenever they change.
    Each turn has its own Output, so an update sends that turn's outputs, not the feed's.
    `display` and `update_display` take IPython's arguments, so `CellView` renders here too."""

    def __init__(self) -> None:
        self.heading = w.HTML(FEED_IDLE)
        self.stop_button = w.Button(
            description="Stop",
            icon="stop",
            button_style="danger",
            disabled=True,
            tooltip="Stop the co-driver's turn",
        )
        self.turns = w.VBox([])
        self.output = w.Output()  # the current turn's (replaced at each turn)
        #: display id -> its index in the current turn's outputs (for updates in place).
        self._ids: dict[str, int] = {}
        self._on_stop: Callable[[], Any] | None = None
        self.stop_button.on_click(lambda _button: self._on_stop and self._on_stop())
        super().__init__([w.HBox([self.heading, self.stop_button]), self.turns])

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """Every output the feed shows, oldest first."""
        return [o for turn in self.turns.children for o in turn.outputs]

    def display(
        self, bundle: dict[str, Any], raw: bool = True, display_id: str | None = None, **_: Any
    ) -> None:
        self.output.outputs = (*self.output.outputs, _as_output(bundle))
        if display_id:
            self._ids[display_id] = len(self.output.outputs) - 1

    def update_display(
        self, bundle: dict[str, Any], raw: bool = True, display_id: str | None = None, **_: Any
    ) -> None:
        index = self._ids.get(display_id or "")
        if index is None:
            return self.display(bundle, display_id=display_id)
        outputs = list(self.output.outputs)
        outputs[index] = _as_output(bundle)
        self.output.outputs = tuple(outputs)
        return None

    def running(self, prompt: SharedPrompt, on_stop: Callable[[], Any]) -> None:
        """A co-driver's turn starts: a new Output for it, saying whose; Stop ends it."""
        self.output, self._ids = w.Output(layout=w.Layout(border_top="1px solid #ddd")), {}
        self.turns.children = (*self.turns.children[-(FEED_TURNS - 1) :], self.output)
        self._on_stop = on_stop
        self.stop_button.disabled = False
        asker = html.escape(f"{prompt.who} ({prompt.source})")
        # Whose prompt it is, apart from whose credentials and budget run it.
        runs_as = html.escape(f"run with {_user()}'s credentials and budget")
        self.heading.value = f"<b>Session feed</b> · prompt by {asker}, {runs_as}"
        self.display(
            {
                "text/plain": f"▶ prompt by {prompt.who} ({prompt.source}), run with "
                f"{_user()}'s credentials and budget: {prompt.text}",
                "text/html": f"<div style='border-left:3px solid #1565c0;padding-left:6px'>"
                f"<b>▶ {asker}</b><pre style='white-space:pre-wrap'>"
                f"{html.escape(prompt.text)}</pre></div>",
            }
        )

    def idle(self) -> None:
        self._on_stop = None
        self.stop_button.disabled = True
        self.heading.value = FEED_IDLE


def _as_output(bundle: dict[str, Any]) -> dict[str, Any]:
    return {"output_type": "display_data", "data": bundle, "metadata": {}}
