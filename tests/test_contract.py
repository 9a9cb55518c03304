"""Every built-in harness passes the same contract, with its real CLI, in the real sandbox."""

from omnikernel.events import EventKind
from omnikernel.testing.contract import HarnessContract

from .conftest import require_cli


class TestClaudeContract(HarnessContract):
    harness = "claude"

    def setup_method(self) -> None:
        require_cli("claude")

    def test_each_turn_reports_its_own_cost(self, make_session):
        """Claude Code's `total_cost_usd` runs from its process's start; each turn's usage
        holds that turn's share, which matches what the gateway metered for it."""
        turns = self.run(make_session(), "contract recall", "contract recall", "contract recall")
        for events in turns:
            (usage,) = [e.data for e in events if e.kind == EventKind.USAGE]
            metered = sum(e.data["cost_usd"] for e in events if e.kind == EventKind.SPEND)
            assert metered > 0 and abs(usage["cost_usd"] - metered) <= 0.01 * metered, (
                usage,
                metered,
            )


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


class TestGeminiContract(HarnessContract):
    """Gemini CLI through its ACP mode, speaking the Gemini API to the gateway."""

    harness = "gemini"

    def setup_method(self) -> None:
        require_cli("gemini")


class TestQwenContract(HarnessContract):
    """Qwen Code through its ACP mode, speaking Chat Completions to the gateway."""

    harness = "qwen"

    def setup_method(self) -> None:
        require_cli("qwen")


class TestOpenCodeContract(HarnessContract):
    """OpenCode through its ACP server, its Anthropic provider pointed at the gateway."""

    harness = "opencode"

    def setup_method(self) -> None:
        require_cli("opencode")
