"""Test helpers shipped with the package: the scripted fake model server and its scenarios.

The kernel also runs the fake model as its offline rehearsal model when no credentials are
configured, and third-party harness authors can test their adapters against it.
"""

from .fake_model import FakeModelServer, RecordedRequest
from .scenario import Conversation, Reply, Rule, Scenario, ToolCall, Usage

__all__ = [
    "Conversation",
    "FakeModelServer",
    "RecordedRequest",
    "Reply",
    "Rule",
    "Scenario",
    "ToolCall",
    "Usage",
]
