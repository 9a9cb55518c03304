"""Plan logins (Claude, ChatGPT) through the gateway: the real token only on the upstream
request, refreshed on expiry or a 401 and written back, chosen per harness; against the fake
model server (which also plays the OAuth token endpoint) on loopback."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import anthropic
import openai
import pytest

from omnikernel.gateway import Gateway, SpendRecord
from omnikernel.gateway.credentials import (
    CHATGPT_CLIENT_ID,
    CLAUDE_CLIENT_ID,
    CLAUDE_OAUTH_BETA,
    LoginEndpoints,
    LoginError,
    choose,
    find_login,
    parse_preferences,
)
from omnikernel.gateway.upstream import UpstreamConfig
from omnikernel.testing import FakeModelServer, Scenario

from .test_gateway import settle

STALE = "sk-ant-oat01-stale-access-token-0001"
FRESH = "sk-ant-oat01-fresh-access-token-0002"
REFRESH = "sk-ant-ort01-refresh-token-0003"
NEXT_REFRESH = "sk-ant-ort01-refresh-token-0004"
SCENARIO = Scenario.from_dict(
    {"rules": [{"match": "hello", "steps": [{"text": "hi there",
                                             "usage": {"input_tokens": 1000, "output_tokens": 10}}]}]}
)  # fmt: skip
IN_AN_HOUR_MS = int((time.time() + 3600) * 1000)


def write_claude_login(config_dir: Path, token: str, expires_ms: int = IN_AN_HOUR_MS) -> Path:
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / ".credentials.json"
    path.write_text(
        json.dumps(
            {
                "claudeAiOauth": {
                    "accessToken": token,
                    "refreshToken": REFRESH,
                    "expiresAt": expires_ms,
                    "scopes": ["user:inference"],
                    "subscriptionType": "max",
                },
                "mcpOAuth": {"kept": "as is"},
            }
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def fake():
    with FakeModelServer(SCENARIO, api_key=FRESH).start_in_thread() as server:
        server.oauth_grants[REFRESH] = {
            "access_token": FRESH,
            "refresh_token": NEXT_REFRESH,
            "expires_in": 28800,
            "scope": "user:inference",
        }
        yield server


def claude_gateway(fake: FakeModelServer, config_dir: Path) -> tuple[Gateway, str]:
    endpoints = LoginEndpoints(claude_token_url=fake.base_url + "/v1/oauth/token")
    login = find_login("claude", {"CLAUDE_CONFIG_DIR": str(config_dir)}, endpoints)
    assert login is not None
    config = UpstreamConfig(anthropic_base_url=fake.base_url)
    choice = choose(config, "claude", "anthropic", "login", login, endpoints)
    assert choice.source == "login" and choice.upstream is not None
    records: list[SpendRecord] = []
    gw = Gateway({"claude": choice.upstream}, on_spend=records.append).start_in_thread()
    gw.records = records  # type: ignore[attr-defined]
    return gw, gw.issue_secret("claude")


def ask(gw: Gateway, secret: str) -> str:
    """What Claude Code does with a plan login: Bearer <token> and the OAuth beta header."""
    client = anthropic.Anthropic(
        base_url=gw.base_url_for("claude", "anthropic", tcp=True),
        auth_token=secret,
        max_retries=0,
        default_headers={"anthropic-beta": CLAUDE_OAUTH_BETA},
    )
    reply = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "hello"}]
    )
    return reply.content[0].text


def test_the_placeholder_never_reaches_the_upstream_only_the_real_token(fake, tmp_path):
    path = write_claude_login(tmp_path / "claude", FRESH)
    gw, secret = claude_gateway(fake, tmp_path / "claude")
    try:
        assert ask(gw, secret) == "hi there"
        posts = [r for r in fake.requests if r.method == "POST"]
        assert posts and all(r.headers["authorization"] == f"Bearer {FRESH}" for r in posts)
        assert all(CLAUDE_OAUTH_BETA in r.headers["anthropic-beta"] for r in posts)
        assert not any(secret in json.dumps(r.headers) for r in fake.requests)
        assert all("x-api-key" not in r.headers for r in posts)
        # Without the gateway, the placeholder is worth nothing upstream.
        direct = anthropic.Anthropic(base_url=fake.base_url, auth_token=secret, max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            direct.messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hello"}]
            )
        # Metered as a plan: the API-equivalent price, flagged as not spent.
        records = settle(gw)
        assert records and records[-1].plan and records[-1].cost_usd and records[-1].cost_usd > 0
        assert fake.oauth_requests == []  # nothing to refresh
        assert json.loads(path.read_text())["claudeAiOauth"]["accessToken"] == FRESH
    finally:
        gw.stop_thread()


def test_a_401_refreshes_the_login_and_writes_it_back(fake, tmp_path, caplog):
    # The file says the token is good for an hour, but the upstream refuses it (revoked early).
    path = write_claude_login(tmp_path / "claude", STALE)
    gw, secret = claude_gateway(fake, tmp_path / "claude")
    try:
        assert ask(gw, secret) == "hi there"
        # The fake answered the stale token 401 (and logged it), then the refreshed one.
        assert [r for r in caplog.records if "FakeModelServer refused" in r.getMessage()]
        posts = [r.headers["authorization"] for r in fake.requests if r.method == "POST"]
        assert posts == [f"Bearer {FRESH}"]
        assert fake.oauth_requests == [
            {
                "grant_type": "refresh_token",
                "refresh_token": REFRESH,
                "client_id": CLAUDE_CLIENT_ID,
                "scope": "user:profile user:inference user:sessions:claude_code user:mcp_servers",
            }
        ]
        saved = json.loads(path.read_text())
        oauth = saved["claudeAiOauth"]
        assert (oauth["accessToken"], oauth["refreshToken"]) == (FRESH, NEXT_REFRESH)
        assert oauth["expiresAt"] > time.time() * 1000 + 7 * 3600 * 1000
        assert oauth["subscriptionType"] == "max" and saved["mcpOAuth"] == {"kept": "as is"}
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in path.parent.iterdir()] == [".credentials.json"]  # no temp left
        # The next call uses the refreshed token straight away.
        assert ask(gw, secret) == "hi there"
        assert len(fake.oauth_requests) == 1
    finally:
        gw.stop_thread()


def test_an_expired_token_is_refreshed_before_the_call(fake, tmp_path, caplog):
    path = write_claude_login(tmp_path / "claude", STALE, expires_ms=int(time.time() * 1000) - 1)
    gw, secret = claude_gateway(fake, tmp_path / "claude")
    try:
        assert ask(gw, secret) == "hi there"
        assert not [r for r in caplog.records if "refused" in r.getMessage()]  # never sent stale
        assert len(fake.oauth_requests) == 1
        assert [r.headers["authorization"] for r in fake.requests if r.method == "POST"] == [
            f"Bearer {FRESH}"
        ]
        assert json.loads(path.read_text())["claudeAiOauth"]["accessToken"] == FRESH
    finally:
        gw.stop_thread()


def test_a_refused_refresh_says_how_to_log_in_again(fake, tmp_path):
    fake.oauth_grants.clear()  # the refresh token was revoked too
    path = write_claude_login(tmp_path / "claude", STALE)
    gw, secret = claude_gateway(fake, tmp_path / "claude")
    try:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            ask(gw, secret)
        message = str(caught.value)
        assert "could not be refreshed" in message and "/login" in message
        assert STALE not in message and REFRESH not in message
        assert json.loads(path.read_text())["claudeAiOauth"]["accessToken"] == STALE
    finally:
        gw.stop_thread()


def test_a_token_the_users_own_claude_refreshed_meanwhile_is_adopted(fake, tmp_path):
    path = write_claude_login(tmp_path / "claude", STALE)
    gw, secret = claude_gateway(fake, tmp_path / "claude")
    try:
        write_claude_login(tmp_path / "claude", FRESH)  # the user's claude refreshed it
        assert ask(gw, secret) == "hi there"
        assert fake.oauth_requests == []  # no second refresh: that would rotate theirs away
        assert json.loads(path.read_text())["claudeAiOauth"]["accessToken"] == FRESH
    finally:
        gw.stop_thread()


def test_recording_a_cassette_keeps_the_login_out(fake, tmp_path):
    write_claude_login(tmp_path / "claude", STALE)
    gw, secret = claude_gateway(fake, tmp_path / "claude")
    fake.extra_headers = {
        "anthropic-ratelimit-unified-5h-utilization": "0.42",
        "anthropic-ratelimit-unified-status": "allowed",
    }
    try:
        tape = tmp_path / "tape.jsonl"
        gw.record_to(tape)
        assert ask(gw, secret) == "hi there"
        settle(gw)
        text = tape.read_text()
        assert text and all(s not in text for s in (STALE, FRESH, REFRESH, NEXT_REFRESH, secret))
        # The plan's usage-limit headers are kept for %spend.
        (limits,) = gw.latest_limits().values()
        assert limits.harnesses == {"claude"} and "login" in limits.upstream
        assert limits.headers["anthropic-ratelimit-unified-5h-utilization"] == "0.42"
        assert "5-hour 42% used" in limits.text()
    finally:
        gw.stop_thread()


def chatgpt_auth(codex_home: Path, access: str, account: str = "acct-123") -> Path:
    codex_home.mkdir(parents=True, exist_ok=True)
    path = codex_home / "auth.json"
    path.write_text(
        json.dumps(
            {
                "OPENAI_API_KEY": None,
                "tokens": {
                    "id_token": "header.payload.sig",
                    "access_token": access,
                    "refresh_token": "rt-chatgpt-1",
                    "account_id": account,
                },
                "last_refresh": "2026-01-01T00:00:00Z",
            }
        )
    )
    return path


def test_chatgpt_login_gets_its_token_and_account_header_and_refreshes(tmp_path):
    with FakeModelServer(SCENARIO, api_key="chatgpt-fresh").start_in_thread() as fake:
        fake.oauth_grants["rt-chatgpt-1"] = {
            "access_token": "chatgpt-fresh",
            "refresh_token": "rt-chatgpt-2",
            "id_token": "a.b.c",
        }
        path = chatgpt_auth(tmp_path / "codex", "chatgpt-stale")
        endpoints = LoginEndpoints(
            chatgpt_token_url=fake.base_url + "/oauth/token",
            # The ChatGPT backend serves /responses without /v1; the fake under /v1.
            chatgpt_base_url=fake.base_url + "/v1",
        )
        login = find_login("chatgpt", {"CODEX_HOME": str(tmp_path / "codex")}, endpoints)
        choice = choose(UpstreamConfig(), "codex", "openai", "auto", login, endpoints)
        assert choice.source == "login" and choice.upstream is not None
        gw = Gateway({"codex": choice.upstream}).start_in_thread()
        try:
            client = openai.OpenAI(
                base_url=gw.base_url_for("codex", "openai", tcp=True),
                api_key=gw.issue_secret("codex"),
                max_retries=0,
            )
            events = list(client.responses.create(model="gpt-5", input="hello", stream=True))
            assert events[-1].type == "response.completed"
            posts = [r for r in fake.requests if r.path == "/v1/responses"]
            # The stale token was refused (401: not recorded), refreshed, and the call retried.
            assert [r.headers["authorization"] for r in posts] == ["Bearer chatgpt-fresh"]
            assert all(r.headers["chatgpt-account-id"] == "acct-123" for r in posts)
            assert fake.oauth_requests[0]["client_id"] == CHATGPT_CLIENT_ID
            tokens = json.loads(path.read_text())["tokens"]
            assert tokens == {
                "id_token": "a.b.c",
                "access_token": "chatgpt-fresh",
                "refresh_token": "rt-chatgpt-2",
                "account_id": "acct-123",
            }
        finally:
            gw.stop_thread()


def test_choosing_the_credential(tmp_path):
    login = find_login("claude", {"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-long-lived"})
    assert login is not None and login.where == "$CLAUDE_CODE_OAUTH_TOKEN"
    keyed = UpstreamConfig(anthropic_api_key="sk-ant-api")
    # An API key wins over a login, unless the user says otherwise.
    assert choose(keyed, "claude", "anthropic", "auto", login).source == "api-key"
    chosen = choose(keyed, "claude", "anthropic", "login", login)
    assert chosen.source == "login" and chosen.upstream.base_url == "https://api.anthropic.com"
    assert chosen.label == "plan login ($CLAUDE_CODE_OAUTH_TOKEN)"
    # A compatible gateway's base URL (no key) also wins: the login is not sent to it.
    local = UpstreamConfig(anthropic_base_url="http://127.0.0.1:11434")
    assert choose(local, "claude", "anthropic", "auto", login).source == "gateway"
    # Nothing at all: offline, saying how to log in.
    offline = choose(UpstreamConfig(), "claude", "anthropic", "auto", None)
    assert offline.source == "offline" and "claude setup-token" in offline.label
    assert "codex login" in choose(UpstreamConfig(), "codex", "openai", "auto", None).label
    assert choose(keyed, "claude", "anthropic", "offline", login).upstream is None
    with pytest.raises(LoginError, match="only claude, codex"):
        choose(UpstreamConfig(), "pi", "anthropic", "login", login)
    with pytest.raises(LoginError, match="none was found"):
        choose(UpstreamConfig(), "claude", "anthropic", "login", None)
    assert parse_preferences(" claude=login, codex=api-key") == {
        "claude": "login",
        "codex": "api-key",
    }
    # An unreadable credentials file is an error saying which file, not a crash later.
    (tmp_path / ".credentials.json").write_text("{not json")
    with pytest.raises(LoginError, match=".credentials.json"):
        find_login("claude", {"CLAUDE_CONFIG_DIR": str(tmp_path)})
    assert find_login("chatgpt", {"CODEX_HOME": str(tmp_path / "none"), "HOME": os.devnull}) is None
