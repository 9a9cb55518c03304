"""Harness discovery: every adapter, built-in or third-party, registers through the
``omnikernel.harnesses`` entry-point group (``name = "package.module:HarnessClass"``)."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from omnikernel.harnesses.base import (
    Decide,
    Harness,
    HarnessContext,
    HarnessError,
    HarnessInfo,
    HarnessNotInstalledError,
)

ENTRY_POINT_GROUP = "omnikernel.harnesses"

log = logging.getLogger(__name__)


class UnknownHarnessError(HarnessError):
    pass


def discover() -> dict[str, type[Harness]]:
    """All installed harness classes by name. A broken plug-in is logged and left out."""
    found: dict[str, type[Harness]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
        except Exception:  # a third-party plug-in must not take the kernel down
            log.exception("cannot load harness %r from %s", entry.name, entry.value)
            continue
        if isinstance(cls, type) and issubclass(cls, Harness):
            found[entry.name] = cls
        else:
            log.error("harness entry point %r is not a Harness subclass", entry.name)
    return dict(sorted(found.items()))


def harness_class(name: str, available: dict[str, type[Harness]] | None = None) -> type[Harness]:
    available = discover() if available is None else available
    try:
        return available[name]
    except KeyError:
        names = ", ".join(available) or "none"
        raise UnknownHarnessError(
            f"Unknown harness {name!r}. Installed harnesses: {names}. "
            "`%agents` lists them with their versions and install commands."
        ) from None


__all__ = [
    "ENTRY_POINT_GROUP",
    "Decide",
    "Harness",
    "HarnessContext",
    "HarnessError",
    "HarnessInfo",
    "HarnessNotInstalledError",
    "UnknownHarnessError",
    "discover",
    "harness_class",
]
