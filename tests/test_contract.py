"""Every built-in harness passes the same contract, with its real CLI, in the real sandbox."""

from omnikernel.testing.contract import HarnessContract

from .conftest import require_cli


class TestClaudeContract(HarnessContract):
    harness = "claude"

    def setup_method(self) -> None:
        require_cli("claude")


class TestCodexContract(HarnessContract):
    harness = "codex"

    def setup_method(self) -> None:
        require_cli("codex")


class TestPiContract(HarnessContract):
    harness = "pi"

    def setup_method(self) -> None:
        require_cli("pi")


class TestAcpContract(HarnessContract):
    """An agent over the Agent Client Protocol: Claude Code through @zed-industries/claude-code-acp."""

    harness = "claude-acp"

    def setup_method(self) -> None:
        require_cli("claude-code-acp")
