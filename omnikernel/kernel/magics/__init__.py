"""The kernel's magics, one module per family. They are ordinary IPython magics (so `%lsmagic`
and `%agent?` work) acting on the kernel's `AgentSession`:

- `agents`: ``%agent [NAME [--model M]]``, ``%agents``, ``%history``
- `spend`: ``%spend``, ``%budget [USD|N tokens|off]``
- `policy`: ``%policy ...``, ``%autoapprove [on|off]``
- `sandbox`: ``%sandbox [auto|bwrap|firejail|off|allow HOST|read PATH]``
- `tape`: ``%record [FILE|off]``, ``%replay FILE|off``
- `session`: ``%session ...``, ``%fork [NAME]``, ``%export FORMAT [FILE]``
- `share`: ``%share [feed|revoke ...]`` (registered by the kernel, which gives it the feed)

A prompt runs asynchronously and IPython cell magics cannot, so the cell-level ones
(``%%agent NAME``, ``%%python``, ``%fix``) are routed by the kernel itself
(`omnikernel.kernel.routing`, `omnikernel.kernel.kernel`).
"""

from omnikernel.kernel.magics.agents import AgentMagics
from omnikernel.kernel.magics.policy import PolicyMagics
from omnikernel.kernel.magics.sandbox import SandboxMagics
from omnikernel.kernel.magics.session import SessionMagics
from omnikernel.kernel.magics.spend import SpendMagics
from omnikernel.kernel.magics.tape import TapeMagics

#: The families the kernel registers as they are (`share` needs the kernel's feed).
FAMILIES = (AgentMagics, SpendMagics, PolicyMagics, SandboxMagics, TapeMagics, SessionMagics)

__all__ = [
    "FAMILIES",
    "AgentMagics",
    "PolicyMagics",
    "SandboxMagics",
    "SessionMagics",
    "SpendMagics",
    "TapeMagics",
]
