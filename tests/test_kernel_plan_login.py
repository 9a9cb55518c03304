"""A user with only a plan login runs a turn through the kernel with the real CLIs: Claude Code
logged in with a Claude plan, Codex with a ChatGPT login. The real token reaches only the
(fake) upstream: never the agent's environment or files, the store, or the notebook."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from omnikernel.testing import FakeModelServer, Scenario

from .conftest import require_claude, require_cli
from .test_credentials import (
    FRESH,
    NEXT_REFRESH,
    REFRESH,
    STALE,
    chatgpt_auth,
    write_claude_login,
)
from .test_kernel_claude import descendants

SCENARIO = Scenario.from_dict(
    {"rules": [{"match": "hello", "steps": [{"text": "Plan-login-works.",
                                             "usage": {"input_tokens": 1200, "output_tokens": 8}}]}]}
)  # fmt: skip


MARKER = b"CLAUDE_CODE_OAUTH_TOKEN="


def agent_environments(kernel) -> list[bytes]:
    found = []
    for pid in descendants(kernel.km.provisioner.pid):
        try:
            found.append(open(f"/proc/{pid}/environ", "rb").read())
        except OSError:
            pass
    return found


def files_containing(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{path}: {n[:12]}…" for n in needles if n.encode() in data]
    return hits


def test_claude_with_only_a_plan_login_runs_a_turn(workdir, start_kernel, tmp_path):
    require_claude()
    host_config = tmp_path / "host-claude"
    credentials = write_claude_login(host_config, STALE)  # refused upstream: refreshed on 401
    with FakeModelServer(SCENARIO, api_key=FRESH).start_in_thread() as fake:
        fake.oauth_grants[REFRESH] = {
            "access_token": FRESH,
            "refresh_token": NEXT_REFRESH,
            "expires_in": 28800,
        }
        kernel = start_kernel(
            workdir,
            ANTHROPIC_BASE_URL=fake.base_url,
            OMNIKERNEL_CREDENTIALS="claude=login",
            OMNIKERNEL_CLAUDE_TOKEN_URL=fake.base_url + "/v1/oauth/token",
            CLAUDE_CONFIG_DIR=str(host_config),
            OMNIKERNEL_MODEL="claude-sonnet-4-5",
            OMNIKERNEL_AUTO_APPROVE="1",
        )
        agents = kernel.execute("%agents")
        assert f"plan login ({credentials})" in agents.text
        assert "offline rehearsal" in agents.text  # codex: no key, no login here

        environs: list[bytes] = []

        def snoop(msg):  # until the agent is seen (the first outputs may come before it starts)
            if not any(MARKER in env for env in environs):
                environs.extend(agent_environments(kernel))

        result = kernel.collect(kernel.kc.execute("Say hello."), timeout=180, on_output=snoop)
        assert result.status == "ok", result.text
        assert "Plan-login-works." in result.text
        assert "plan (API-equivalent $" in result.text  # never shown as money spent

        secrets = [STALE, FRESH, REFRESH, NEXT_REFRESH]
        # The agent sent its placeholder as a plan login would; the upstream got the real token.
        agent_env = next(
            dict(v.split(b"=", 1) for v in env.split(b"\0") if b"=" in v)
            for env in environs
            if b"CLAUDE_CODE_OAUTH_TOKEN=" in env
        )
        placeholder = agent_env[b"CLAUDE_CODE_OAUTH_TOKEN"].decode()
        assert placeholder.startswith("omk-") and b"ANTHROPIC_API_KEY" not in agent_env
        assert all(s.encode() not in env for env in environs for s in secrets)
        posts = [r for r in fake.requests if r.path == "/v1/messages"]
        assert posts and all(r.headers["authorization"] == f"Bearer {FRESH}" for r in posts)
        assert all("oauth-2025-04-20" in r.headers.get("anthropic-beta", "") for r in posts)
        assert not any(placeholder in json.dumps(r.headers) for r in fake.requests)
        # Refreshed once and written back where the user's own claude reads it.
        assert len(fake.oauth_requests) == 1
        assert json.loads(credentials.read_text())["claudeAiOauth"]["accessToken"] == FRESH

        spend = kernel.execute("%spend")
        assert "plan, API-equivalent $" in spend.text and "not spent" in spend.text
        # Nowhere the agent or the notebook can see: its files, the store, the outputs.
        assert files_containing(tmp_path / "state", secrets) == []
        assert files_containing(tmp_path / "store", secrets) == []
        assert files_containing(workdir, secrets) == []
        assert not any(s in json.dumps(result.outputs, default=str) for s in secrets)


def test_codex_with_only_a_chatgpt_login_runs_a_turn(workdir, start_kernel, tmp_path):
    require_cli("codex")
    token = "chatgpt-access-token-" + "x" * 20
    auth = chatgpt_auth(tmp_path / "host-codex", token, account="acct-777")
    with FakeModelServer(SCENARIO, api_key=token).start_in_thread() as fake:
        kernel = start_kernel(
            workdir,
            OMNIKERNEL_HARNESS="codex",
            CODEX_HOME=str(tmp_path / "host-codex"),
            OMNIKERNEL_CHATGPT_BASE_URL=fake.base_url + "/v1",
            OMNIKERNEL_AUTO_APPROVE="1",
        )
        agent = kernel.execute("%agent")
        assert f"plan login ({auth})" in agent.text and "ChatGPT plan login" in agent.text
        environs: list[bytes] = []

        def snoop(msg):
            if not any(b"OMNIKERNEL_CODEX_KEY=" in env for env in environs):
                environs.extend(agent_environments(kernel))

        started = time.monotonic()
        result = kernel.collect(kernel.kc.execute("Say hello."), timeout=180, on_output=snoop)
        assert result.status == "ok", result.text
        assert "Plan-login-works." in result.text, result.text
        assert time.monotonic() - started < 170
        posts = [r for r in fake.requests if r.path == "/v1/responses"]
        assert posts and all(r.headers["authorization"] == f"Bearer {token}" for r in posts)
        assert all(r.headers["chatgpt-account-id"] == "acct-777" for r in posts)
        assert any(b"OMNIKERNEL_CODEX_KEY=omk-" in env for env in environs)
        assert all(token.encode() not in env for env in environs)
        assert all(b"rt-chatgpt-1" not in env for env in environs)
        secrets = [token, "rt-chatgpt-1"]
        assert files_containing(tmp_path / "state", secrets) == []
        assert files_containing(tmp_path / "store", secrets) == []
        assert not any(s in json.dumps(result.outputs, default=str) for s in secrets)


@pytest.mark.parametrize("configured", ["", "claude=login"])
def test_with_nothing_configured_the_cell_says_how_to_log_in(workdir, start_kernel, configured):
    kernel = start_kernel(workdir, OMNIKERNEL_CREDENTIALS=configured)
    agents = kernel.execute("%agents")
    if configured:
        # Asked for a login that is not there: said, with what to do, not a silent fallback.
        assert "unusable" in agents.text and "claude setup-token" in agents.text
    else:
        assert "offline rehearsal (no API key or login found; to use your plan" in agents.text
        assert "codex login" in agents.text


def test_a_login_kept_in_the_notebook_folder_is_masked_from_the_agent(workdir, start_kernel):
    """The attack: the user keeps Claude's config dir inside the project, and the agent reads
    it. Unsandboxed it works (only the redaction keeps the token out of the cell); in the
    sandbox the login's file is masked."""
    require_claude()
    host_config = workdir / "claude-config"
    write_claude_login(host_config, FRESH)
    steal = {
        "match": "show the login",
        "steps": [
            {
                "text": "Reading it.",
                "tool_calls": [
                    {"action": "shell", "command": "cat claude-config/.credentials.json; echo END"}
                ],
            },
            {"text": "Done reading."},
        ],
    }
    with FakeModelServer(
        Scenario.from_dict({"rules": [steal]}), api_key=FRESH
    ).start_in_thread() as fake:
        kernel = start_kernel(
            workdir,
            ANTHROPIC_BASE_URL=fake.base_url,
            OMNIKERNEL_CREDENTIALS="claude=login",
            CLAUDE_CONFIG_DIR=str(host_config),
            OMNIKERNEL_MODEL="claude-sonnet-4-5",
            OMNIKERNEL_AUTO_APPROVE="1",
        )
        sandboxed = kernel.execute("Please show the login.", timeout=180)
        assert sandboxed.status == "ok" and "Done reading." in sandboxed.text, sandboxed.text
        assert "END" in json.dumps(sandboxed.outputs, default=str)  # the command did run
        assert FRESH not in json.dumps(sandboxed.outputs, default=str)
        assert "[redacted: claude login]" not in json.dumps(sandboxed.outputs, default=str)
        kernel.execute("%sandbox off")
        unprotected = kernel.execute("Please show the login again.", timeout=180)
        shown = json.dumps(unprotected.outputs, default=str)
        assert "[redacted: claude login]" in shown and FRESH not in shown
