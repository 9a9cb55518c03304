"""The one decision function every harness's permission requests go to.

Pure: an ``approval_request`` event in, a `Decision` out. Until the policy engine lands the
rules are: read-only actions are allowed; anything else is denied with a message saying how to
allow it, unless auto-approval is on (``OMNIKERNEL_AUTO_APPROVE=1`` for headless runs, or
``%autoapprove on``), and then every approval says so. Policy rules will be evaluated *before*
auto-approval, so a rule that denies still denies when auto-approval is on.
"""

from __future__ import annotations

import dataclasses
import os

from .events import READ_ONLY_ACTIONS, Event

AUTO_APPROVE_ENV = "OMNIKERNEL_AUTO_APPROVE"


@dataclasses.dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str
    #: Who decided: "read-only", "auto-approve", "default-policy", later "user" or a rule name.
    by: str

    @property
    def verdict(self) -> str:
        return "allow" if self.allow else "deny"


def auto_approve_from_env(environ: dict[str, str] | None = None) -> bool:
    value = (environ if environ is not None else os.environ).get(AUTO_APPROVE_ENV, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def decide(request: Event, *, auto_approve: bool) -> Decision:
    """Allow or deny one permission request."""
    action = request.data.get("action", "other")
    tool = request.data.get("tool", "tool")
    summary = request.data.get("summary", "")
    if action in READ_ONLY_ACTIONS:
        return Decision(True, f"{action} is read-only", "read-only")
    if auto_approve:
        return Decision(
            True, f"auto-approved ({AUTO_APPROVE_ENV}=1 or %autoapprove on)", "auto-approve"
        )
    what = f"{tool} `{summary}`" if summary else tool
    return Decision(
        False,
        f"Omnigent denied {what}: this {action} action needs approval and none was given. "
        f"To allow such actions in this session run `%autoapprove on` in a cell "
        f"(or start the kernel with {AUTO_APPROVE_ENV}=1), then run the prompt again.",
        "default-policy",
    )
