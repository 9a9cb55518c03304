"""Every built-in harness passes the same contract, with its real CLI, in the real sandbox."""

import asyncio
import json

import pytest

from omnikernel.events import EventKind
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.testing.contract import SCENARIO, HarnessContract

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

    def test_the_policy_sees_the_tool_and_its_command(self, make_session):
        (events,) = self.run(make_session(), "contract write a file")
        asked = next(e for e in events if e.kind == EventKind.APPROVAL_REQUEST)
        assert asked.data["tool"] == "run_shell_command" and asked.data["action"] == "exec"
        assert asked.data["input"]["command"] == "echo contract > contract.txt"


class TestQwenContract(HarnessContract):
    """Qwen Code through its ACP mode, speaking Chat Completions to the gateway."""

    harness = "qwen"

    def setup_method(self) -> None:
        require_cli("qwen")

    def test_the_policy_sees_the_tool_and_its_command(self, make_session):
        (events,) = self.run(make_session(), "contract write a file")
        asked = next(e for e in events if e.kind == EventKind.APPROVAL_REQUEST)
        assert asked.data["tool"] == "run_shell_command" and asked.data["action"] == "exec"
        assert asked.data["input"]["command"] == "echo contract > contract.txt"


class TestOpenCodeContract(HarnessContract):
    """OpenCode through its ACP server, its Anthropic provider pointed at the gateway."""

    harness = "opencode"

    def setup_method(self) -> None:
        require_cli("opencode")

    def test_the_policy_sees_the_tool_and_its_command(self, make_session):
        (events,) = self.run(make_session(), "contract write a file")
        asked = next(e for e in events if e.kind == EventKind.APPROVAL_REQUEST)
        assert asked.data["tool"] == "bash" and asked.data["action"] == "exec"
        assert asked.data["input"]["command"] == "echo contract > contract.txt"


#: Each new harness hands over to the next one and is handed over to by the previous one.
HANDOFFS = [("gemini", "qwen"), ("qwen", "opencode"), ("opencode", "gemini")]


@pytest.mark.parametrize(("first", "second"), HANDOFFS)
def test_handoff_between_the_acp_harnesses(first, second, tmp_path):
    """Switching keeps the context: the second harness's model call carries what the first
    did (prompt, command, answer) in an ``<omnigent-handoff>`` block."""
    for name in (first, second):
        require_cli(name)
    contract = HarnessContract()
    contract.harness = first
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as fake:
        maker = HarnessContract.make_session.__wrapped__(contract, fake, tmp_path)
        session = next(maker)
        try:
            s = session()

            async def both() -> tuple[list, list]:
                one = [e async for e in s.run_prompt("contract write a file")]
                two = [e async for e in s.run_prompt("contract recall", harness=second)]
                await s.close()
                return one, two

            one, two = asyncio.run(both())
        finally:
            next(maker, None)
    assert one[-1].data["status"] == "completed" and two[-1].data["status"] == "completed"
    latest = json.dumps(fake.requests[-1].body)
    assert "omnigent-handoff" in latest and "contract write a file" in latest
    assert "echo contract > contract.txt" in latest


def test_record_then_replay_gemini_offline(tmp_path):
    """%record / %replay for Gemini CLI: a turn recorded through the gateway replays with the
    model gone, the same answer, at $0."""
    require_cli("gemini")
    contract = HarnessContract()
    contract.harness = "gemini"
    cassette = tmp_path / "gemini.cassette.jsonl"
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as fake:
        maker = HarnessContract.make_session.__wrapped__(contract, fake, tmp_path)
        make = next(maker)
        recording, replaying = make(), make()
        recording.gateway.record_to(cassette)
        (recorded,) = contract.run(recording, "contract recall")
        fake.stop_thread()  # no model from here on
        replaying.gateway.replay_from(cassette)
        (replayed,) = contract.run(replaying, "contract recall")
        next(maker, None)
    text = "".join(e.data["text"] for e in recorded if e.kind == EventKind.TEXT)
    assert "You asked me to write a file." in text
    assert replayed[-1].data["status"] == "completed", replayed
    assert "".join(e.data["text"] for e in replayed if e.kind == EventKind.TEXT) == text
    spent = [e.data["cost_usd"] for e in replayed if e.kind == EventKind.SPEND]
    assert spent and all(c == 0 for c in spent)
    assert "contract-key" not in cassette.read_text()


@pytest.mark.parametrize("harness", ["gemini", "qwen", "opencode", "claude-acp"])
def test_acp_agent_resumes_its_session_after_its_cli_is_killed(harness, tmp_path):
    """Resume after a restart: the CLI is stopped (killed) between turns; the next turn starts a new
    one, which loads the same ACP session (``session/load``): the model sees the first turn
    from the agent's own history, with no handoff."""
    require_cli({"claude-acp": "claude-code-acp"}.get(harness, harness))
    contract = HarnessContract()
    contract.harness = harness
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as fake:
        maker = HarnessContract.make_session.__wrapped__(contract, fake, tmp_path)
        session = next(maker)(auto_approve=True)
        try:

            async def killed_between() -> tuple[list, list, int, int]:
                one = [e async for e in session.run_prompt("contract write a file")]
                agent = session._harness(harness)
                first = agent._proc
                await agent.close()  # the CLI and everything it started are killed
                two = [e async for e in session.run_prompt("contract recall")]
                second = agent._proc
                await session.close()
                return one, two, id(first), id(second)

            one, two, first_pid, second_pid = asyncio.run(killed_between())
        finally:
            next(maker, None)
    assert one[-1].data["status"] == "completed" and two[-1].data["status"] == "completed", two
    assert first_pid != second_pid  # a new CLI answered the second turn
    latest = json.dumps(fake.requests[-1].body)
    assert "contract write a file" in latest
    if harness == "gemini":  # Gemini CLI keeps nothing session/load could load: a handoff
        assert "omnigent-handoff" in latest
        assert one[-1].data["harness_session"] != two[-1].data["harness_session"]
    else:
        assert "omnigent-handoff" not in latest
        assert one[-1].data["harness_session"] == two[-1].data["harness_session"]


#: What an agent could write into its working directory to approve its own commands.
SELF_APPROVALS = {
    "gemini": {
        ".gemini/settings.json": {"tools": {"allowed": ["run_shell_command", "write_file"]},
                                  "general": {"defaultApprovalMode": "auto_edit"},
                                  "security": {"folderTrust": {"enabled": False}}},
        ".gemini/policies/allow.toml":
            '[[rule]]\ntoolName = "run_shell_command"\ndecision = "allow"\npriority = 999\n',
    },
    "qwen": {".qwen/settings.json": {"permissions": {"allow": ["Bash"]},
                                     "tools": {"approvalMode": "yolo"}}},
    "opencode": {"opencode.json": {"permission": {"bash": "allow", "edit": "allow"}}},
}  # fmt: skip


@pytest.mark.parametrize("harness", list(SELF_APPROVALS))
def test_project_config_the_agent_writes_cannot_skip_the_ask(harness, tmp_path):
    """The attack: the agent (or a cloned repository) puts the CLI's own project configuration
    into the working directory, pre-approving the shell. Each CLI is started so that it ignores
    it (untrusted folder, user-level ask rules, OPENCODE_DISABLE_PROJECT_CONFIG): the command
    still asks, and a person's deny still stops it."""
    require_cli(harness)
    contract = HarnessContract()
    contract.harness = harness
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as fake:
        maker = HarnessContract.make_session.__wrapped__(contract, fake, tmp_path)
        make = next(maker)
        for rel, content in SELF_APPROVALS[harness].items():
            path = tmp_path / "work" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        session = make(auto_approve=False)
        (events,) = contract.run(session, "contract write a file")
        next(maker, None)
    decision = next(e for e in events if e.kind == EventKind.APPROVAL_DECISION)
    assert decision.data["decision"] == "deny"
    assert not (tmp_path / "work" / "contract.txt").exists()
