"""What a sandbox's spec says about brokering (`BrokerSetup`), apart from the broker itself.

The spec, the harnesses and the session name it at every kernel start; the broker
(`omnikernel.sandbox.broker`) imports an HTTP parser (h11), a git pack reader (dulwich) and the
session CA's `cryptography`, about 50 ms that only a sandbox with a brokered host needs, so it is
imported when one starts (`omnikernel.sandbox.launch`), not with this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omnikernel.sandbox.git_push import Push

#: (remote, its default branch or "", the push) -> None to let it through, or why not.
AskPush = Callable[[str, str, "Push"], Awaitable[str | None]]


@dataclasses.dataclass(frozen=True)
class BrokerSetup:
    """What a sandbox's spec says about brokering: the hosts (with the environment variable
    holding each one's token, or ""), and the session's two hooks."""

    hosts: tuple[tuple[str, str], ...]
    ask_push: AskPush | None = dataclasses.field(default=None, compare=False)
    on_secret: Callable[[str, str], None] | None = dataclasses.field(default=None, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h for h, _ in self.hosts)
