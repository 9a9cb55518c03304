"""Bring in a terminal session: the real claude, codex and pi CLIs write their own session files
here (against the scripted model, as a person would in a terminal), and the kernel and
`omnikernel import` read them into notebook sessions that the next prompt continues."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from omnikernel.cli.main import main as cli_main
from omnikernel.events import EventKind
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.session.imports import SessionImportError, find_session, read_session, records
from omnikernel.store.sessions import SessionStore
from omnikernel.testing.contract import SCENARIO

from .conftest import require_cli

WRITE, RECALL = "contract write a file", "contract recall"


@pytest.fixture(scope="module")
def terminal(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Sessions the real CLIs wrote in a terminal: claude (two turns), codex and pi (one turn
    with a shell command each). Returns the environment that finds them."""
    for cli in ("claude", "codex", "pi"):
        require_cli(cli)
    root = tmp_path_factory.mktemp("terminal")
    work, home = root / "work", root / "home"
    for d in (work, home, root / "tmp"):
        d.mkdir()
    found = {
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "CODEX_HOME": str(home / ".codex"),
        "PI_CODING_AGENT_DIR": str(home / ".pi" / "agent"),
    }
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as model:
        base = {"PATH": os.environ["PATH"], "TMPDIR": str(root / "tmp"), **found, "X_KEY": "k"}

        def run(argv: list[str], **env: str) -> None:
            done = subprocess.run(
                argv,
                cwd=work,
                env={**base, **env},
                capture_output=True,
                text=True,
                timeout=180,
                stdin=subprocess.DEVNULL,
            )
            assert done.returncode == 0, (argv, done.stdout[-500:], done.stderr[-1500:])

        claude_env = {
            "ANTHROPIC_BASE_URL": model.base_url,
            "ANTHROPIC_API_KEY": "k",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "IS_SANDBOX": "1",
        }
        yolo = "--dangerously-skip-permissions"
        run(["claude", "-p", WRITE, yolo], **claude_env)
        run(["claude", "-p", "--continue", RECALL, yolo], **claude_env)
        codex_home = Path(found["CODEX_HOME"])
        codex_home.mkdir()
        (codex_home / "config.toml").write_text(
            'model = "gpt-5.5"\nmodel_provider = "x"\ncheck_for_update_on_startup = false\n'
            "[analytics]\nenabled = false\n[model_providers.x]\n"
            f'name = "x"\nbase_url = "{model.base_url}/v1"\nenv_key = "X_KEY"\n'
            'wire_api = "responses"\n'
        )
        run(["codex", "exec", "--skip-git-repo-check", "--disable", "plugins", "-s",
             "danger-full-access", WRITE])  # fmt: skip
        pi_dir = Path(found["PI_CODING_AGENT_DIR"])
        pi_dir.mkdir(parents=True)
        provider = {"baseUrl": model.base_url, "api": "anthropic-messages", "apiKey": "X_KEY",
                    "models": [{"id": "claude-sonnet-4-5"}]}  # fmt: skip
        (pi_dir / "models.json").write_text(json.dumps({"providers": {"p": provider}}))
        run(["pi", "-p", "--provider", "p", "--model", "claude-sonnet-4-5", WRITE],
            PI_OFFLINE="1", PI_TELEMETRY="0")  # fmt: skip
    return {**found, "work": str(work)}


@pytest.mark.parametrize(("harness", "prompts"), [
    ("claude", [WRITE, RECALL]), ("codex", [WRITE]), ("pi", [WRITE])])  # fmt: skip
def test_each_cli_session_file_becomes_turns_of_events(terminal, harness, prompts):
    path = find_session(harness, "latest", terminal, cwd=terminal["work"])
    imported = read_session(harness, path)
    assert imported.cwd == terminal["work"] and imported.native_id in path.name
    assert [t[0].data["prompt"] for t in imported.turns] == prompts
    first = imported.turns[0]
    kinds = [e.kind for e in first]
    assert kinds[0] == EventKind.TURN_START and kinds[-1] == EventKind.TURN_END
    (call,) = [e for e in first if e.kind == EventKind.TOOL_CALL]
    (result,) = [e for e in first if e.kind == EventKind.TOOL_RESULT]
    assert call.data["action"] == "exec" and "echo contract > contract.txt" in call.data["summary"]
    assert result.data["call_id"] == call.data["call_id"]
    assert kinds.index(EventKind.TOOL_CALL) < kinds.index(EventKind.TOOL_RESULT)
    text = "".join(e.data["text"] for e in first if e.kind == EventKind.TEXT)
    assert "Writing the contract file." in text and "The contract file is written." in text
    # Nothing dropped silently: every record that is not a prompt, text, call or result is
    # kept whole in a notice of its turn.
    kept = [r for t in imported.turns for e in t if e.kind == EventKind.NOTICE
            for r in e.data["raw"]]  # fmt: skip
    assert len(kept) == imported.raw_records > 0
    whole = list(records(path))
    unmapped = [r for r in whole if r.get("type") not in ("user", "assistant", "message",
                                                          "response_item")]  # fmt: skip
    assert all(r in kept for r in unmapped), [r for r in unmapped if r not in kept][:2]


def test_latest_or_an_id_and_clear_errors(terminal):
    path = find_session("claude", "latest", terminal)
    native = path.stem
    assert find_session("claude", native[:8], terminal) == path
    with pytest.raises(SessionImportError, match="No claude session matches 'nope'"):
        find_session("claude", "nope", terminal)
    with pytest.raises(SessionImportError, match="only claude, codex, pi"):
        find_session("gemini", "latest", terminal)
    with pytest.raises(SessionImportError, match="No pi sessions under"):
        find_session("pi", "latest", {"HOME": "/nonexistent"})


def test_omnikernel_import_from_a_terminal(terminal, tmp_path, monkeypatch, capsys):
    for var in ("HOME", "CLAUDE_CONFIG_DIR", "CODEX_HOME", "PI_CODING_AGENT_DIR"):
        monkeypatch.setenv(var, terminal[var])
    store_path = tmp_path / "store.sqlite3"
    SessionStore(store_path).close()
    code = cli_main(["--store", str(store_path), "import", "codex", "--session", "from-codex"])
    assert code == 0
    out = capsys.readouterr().out
    assert "%session from-codex" in out and "1 turn(s), 1 tool call(s)" in out
    events = list(SessionStore(store_path).events("from-codex"))
    assert {e.harness for e in events} == {"codex"}
    assert [e.data["prompt"] for e in events if e.kind == EventKind.TURN_START] == [WRITE]
    assert events[-1].kind == EventKind.TURN_END and events[-1].data["imported"]
    again = cli_main(["--store", str(store_path), "import", "codex", "--session", "from-codex"])
    assert again == 2 and "already is a session" in capsys.readouterr().err


def test_a_notebook_continues_each_terminal_session(terminal, workdir, start_kernel):
    """`%session import` in a kernel: a new session holding the terminal's turns, then the next
    prompt goes to that harness, which resumes the CLI's own session by its id."""
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as model:
        kernel = start_kernel(
            workdir,
            ANTHROPIC_BASE_URL=model.base_url,
            ANTHROPIC_API_KEY="k",
            OPENAI_BASE_URL=model.base_url + "/v1",
            OPENAI_API_KEY="k",
            OMNIKERNEL_AUTO_APPROVE="1",
            **{k: terminal[k] for k in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "PI_CODING_AGENT_DIR")},
        )
        bad = kernel.execute("%session import gemini")
        assert bad.status == "error" and "claude|codex|pi" in bad.text
        missing = kernel.execute("%session import claude nope")
        assert missing.status == "error" and "No claude session matches 'nope'" in missing.text
        for harness in ("claude", "codex", "pi"):
            imported = kernel.execute(f"%session import {harness}")
            assert imported.status == "ok", imported.text
            assert f"Imported {harness} session" in imported.text
            assert f"continues it with {harness}, which resumes its own session" in imported.text
            asked = len(model.requests)
            after = kernel.execute("contract recall")
            assert after.status == "ok", after.text
            assert "You asked me to write a file." in after.text
            # Resumed natively: the CLI's own history carries the terminal's turn, no handoff.
            assert "Handed over" not in after.text
            sent = json.dumps([r.body for r in model.requests[asked:]])
            assert "omnigent-handoff" not in sent
            assert WRITE in sent and "echo contract > contract.txt" in sent, (harness, after.text)
            history = kernel.execute("%history").text
            assert WRITE in history and harness in history
