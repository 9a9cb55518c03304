"""The offline rehearsal model: a scripted model server speaking the vendors' wire formats.

A user-facing feature of its own: the kernel answers with it when no credentials are
configured, replays and rehearsals of a notebook build on it, and `python -m
omnikernel.rehearsal` serves it. Tests use the same server (`omnikernel.testing` re-exports it).
"""

from pathlib import Path

from omnikernel.gateway.wire import Conversation, Reply, ToolCall, Usage
from omnikernel.rehearsal.fake_model import FakeModelServer, RecordedRequest
from omnikernel.rehearsal.scenario import Rule, Scenario

#: The scenario answering a notebook that has none of its own (it scripts the quickstart).
DEFAULT_SCENARIO = Path(__file__).parent / "scenarios" / "default.json"

__all__ = [
    "DEFAULT_SCENARIO",
    "Conversation",
    "FakeModelServer",
    "RecordedRequest",
    "Reply",
    "Rule",
    "Scenario",
    "ToolCall",
    "Usage",
]
