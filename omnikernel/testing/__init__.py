"""Test helpers shipped with the package: the harness contract suite (`contract`), the stop
states (`stopping`), the offline notebook runner with its `Approver` (`notebooks`, used by the
tests and the docs build), and, for convenience, the scripted model server of
`omnikernel.rehearsal` that every test runs against.

Third-party harness authors can test their adapters with these.
"""

from omnikernel.rehearsal import (
    Conversation,
    FakeModelServer,
    RecordedRequest,
    Reply,
    Rule,
    Scenario,
    ToolCall,
    Usage,
)

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
