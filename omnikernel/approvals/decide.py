"""The one decision function every harness's permission requests go to.

Pure: an ``approval_request`` event and the policy engine's `Verdict` in, a `Decision` out.
The verdict is the strictest outcome of every rule (see `omnikernel.policy`):

- allow / deny: decided, by the rules named in the verdict;
- ask / pause: a person decides (the approval card, see `approvals`), except that auto-approval
  (``OMNIKERNEL_AUTO_APPROVE=1`` for headless runs, or ``%autoapprove on``) answers the
  *default* ask of a non-read-only action. It never answers a rule's ask, a pause or a deny.
"""

from __future__ import annotations

import dataclasses

from omnikernel.events import Event
from omnikernel.policy.engine import Verdict
from omnikernel.policy.rule import Outcome

AUTO_APPROVE_ENV = "OMNIKERNEL_AUTO_APPROVE"


@dataclasses.dataclass(frozen=True)
class Decision:
    #: "allow" | "deny", or "ask" / "pause" when a person must decide.
    verdict: str
    reason: str
    #: Who decided: "read-only", "auto-approve", a rule ("deny 'rm -rf'"), "user", "timeout".
    by: str
    #: The rules that made (or asked for) the decision.
    rules: tuple[str, ...] = ()
    #: Where the answer came from: "policy", "widget", "share", "timeout", ...
    source: str = "policy"
    #: "once", "session" or "always" (for a person's answer).
    scope: str = "once"
    #: What a "session"/"always" answer covers ("git push", a path).
    subject: str = ""

    @property
    def allow(self) -> bool:
        return self.verdict == "allow"

    @property
    def needs_person(self) -> bool:
        return self.verdict in ("ask", "pause")

    def event_data(self) -> dict[str, object]:
        """What the ``approval_decision`` event records besides request_id and decision."""
        return {
            "reason": self.reason,
            "by": self.by,
            "rules": list(self.rules),
            "source": self.source,
            "scope": self.scope,
            "subject": self.subject,
        }


def decide(request: Event, verdict: Verdict, *, auto_approve: bool) -> Decision:
    """What to do with one permission request, given the policy's verdict."""
    rules, reason = verdict.rules, verdict.reason
    if verdict.outcome == Outcome.ALLOW:
        by = "read-only" if "read-only" in rules else ", ".join(rules) or "policy"
        reason = reason.removeprefix("read-only: ")
        return Decision("allow", reason, by, rules, subject=verdict.subject)
    if verdict.outcome == Outcome.DENY:
        return Decision(
            "deny",
            f"Omnigent policy denied this: {reason}",
            ", ".join(rules),
            rules,
            subject=verdict.subject,
        )
    if verdict.is_default_ask and auto_approve:
        return Decision(
            "allow",
            f"auto-approved ({AUTO_APPROVE_ENV}=1 or %autoapprove on)",
            "auto-approve",
            rules,
            subject=verdict.subject,
        )
    return Decision(str(verdict.outcome), reason, ", ".join(rules), rules, subject=verdict.subject)


def unanswered(request: Event, asked: Decision, timeout_s: float) -> Decision:
    """The decision for an ask nobody answered in time: deny, saying how to avoid it."""
    data = request.data
    what = (
        f"{data.get('tool', 'tool')} `{data.get('summary', '')}`"
        if data.get("summary")
        else (data.get("tool") or "the action")
    )
    hint = (
        " To allow such actions without asking, run `%autoapprove on` in a cell (or start the "
        f"kernel with {AUTO_APPROVE_ENV}=1)."
        if asked.rules == ("default",)
        else " See the rule with `%policy`."
    )
    return Decision(
        "deny",
        f"Omnigent denied {what}: nobody answered the approval within {timeout_s:g} s "
        f"({asked.reason}).{hint}",
        "timeout",
        asked.rules,
        source="timeout",
        subject=asked.subject,
    )
