"""OS sandboxes for harness processes: one spec (`spec`), two backends (`bwrap`, `firejail`),
a unix-socket network bridge to the model gateway (`bridge`), cgroup limits and tree kills
(`cgroup`), and backend choice with a fail-closed start (`launch`)."""

from .launch import (
    BACKENDS,
    CHOICES,
    INSTALL_ALL,
    SandboxedProcess,
    SandboxUnavailableError,
    resolve,
    self_test,
    start_sandboxed,
)
from .spec import HOME_SECRETS, SandboxSpec, default_hidden, protected_in

__all__ = [
    "BACKENDS",
    "CHOICES",
    "HOME_SECRETS",
    "INSTALL_ALL",
    "SandboxSpec",
    "SandboxUnavailableError",
    "SandboxedProcess",
    "default_hidden",
    "protected_in",
    "resolve",
    "self_test",
    "start_sandboxed",
]
