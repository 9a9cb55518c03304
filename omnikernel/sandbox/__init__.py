"""OS sandboxes for harness processes: one spec (`spec`), two backends (`bwrap`, `firejail`),
a unix-socket network bridge to the model gateway (`bridge`), the egress proxy that asks about
every new host (`egress`) and where it connects upstream (`upstream`), cgroup limits and tree
kills (`cgroup`), what the host exposes that must be masked (`exposed`), the per-process run
dir and its cleanup (`rundir`), and backend choice with a fail-closed start (`launch`)."""

from omnikernel.sandbox.launch import (
    BACKENDS,
    CHOICES,
    INSTALL_ALL,
    SandboxedProcess,
    SandboxStartError,
    SandboxUnavailableError,
    resolve,
    self_test,
    start_sandboxed,
)
from omnikernel.sandbox.spec import (
    HOME_SECRETS,
    POLICY_PATHS,
    PROTECTED,
    SandboxSpec,
    default_hidden,
    for_agent,
    protected_in,
)

__all__ = [
    "BACKENDS",
    "CHOICES",
    "HOME_SECRETS",
    "POLICY_PATHS",
    "PROTECTED",
    "INSTALL_ALL",
    "SandboxSpec",
    "SandboxStartError",
    "SandboxUnavailableError",
    "SandboxedProcess",
    "default_hidden",
    "for_agent",
    "protected_in",
    "resolve",
    "self_test",
    "start_sandboxed",
]
