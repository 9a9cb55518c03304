"""Plan logins (a Claude Pro/Max plan, a ChatGPT plan) held on the host, used by the gateway.

Why: most Claude Code and Codex users have no API key; they logged in with a plan. The kernel
reads that login where the user keeps it (``CLAUDE_CODE_OAUTH_TOKEN``, or the
``.credentials.json`` Claude Code keeps in ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``; the
``auth.json`` Codex keeps in ``$CODEX_HOME`` or ``~/.codex``), and only the gateway ever holds
it: the agent gets its session secret as a placeholder, and the gateway puts the real token on
the upstream request. When the access token expires (by its expiry time, or the upstream
answers 401) the gateway refreshes it the way the CLI itself does and writes the refreshed
login back, atomically, so the user's own ``claude`` / ``codex`` keeps working.

`choose` decides, per harness, which credential a session uses: an API key (or a compatible
gateway's base URL) wins over a login unless ``c.OmniKernel.credentials`` says otherwise; with
nothing at all, the offline rehearsal model.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omnikernel.gateway.upstream import (
    ANTHROPIC_DEFAULT_URL,
    KEY_VARS,
    Upstream,
    UpstreamConfig,
    resolve,
)

#: What Claude Code sends with a plan login (checked on Claude Code 2.1.x).
CLAUDE_OAUTH_BETA = "oauth-2025-04-20"
#: Claude Code's public OAuth client and token endpoint (from its cli.js).
CLAUDE_CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
CLAUDE_TOKEN_URL = "https://platform.claude.com/v1/oauth/token"
CLAUDE_SCOPES = "user:profile user:inference user:sessions:claude_code user:mcp_servers"
#: Codex's public OAuth client, token endpoint and the ChatGPT backend it talks to with a login.
CHATGPT_CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
CHATGPT_TOKEN_URL = "https://auth.openai.com/oauth/token"
CHATGPT_BASE_URL = "https://chatgpt.com/backend-api/codex"
#: Refresh this long before the recorded expiry, so a turn never starts on a dying token.
EXPIRY_MARGIN_S = 60

#: Which login serves which harness.
LOGIN_OF_HARNESS = {"claude": "claude", "codex": "chatgpt"}
PREFERENCES = ("auto", "api-key", "login", "offline")
HOW_TO_LOG_IN = {
    "claude": "log in with `claude` (then /login) on this machine, or set "
    "CLAUDE_CODE_OAUTH_TOKEN from `claude setup-token`",
    "chatgpt": "run `codex login` on this machine",
}

#: Where each source is named in `%agents` and `%agent`.
SOURCE_LABELS = {
    "api-key": "API key",
    "gateway": "compatible gateway",
    "login": "plan login",
    "offline": "offline rehearsal",
}


class LoginError(Exception):
    """A login that cannot be used (unreadable, or its refresh was refused): says what to do."""


@dataclasses.dataclass
class Login:
    """One plan login. Only the gateway calls `access_token` / `refresh`."""

    kind: str  # "claude" | "chatgpt"
    where: str  # shown to the user: the file, or the variable's name
    path: Path | None  # the file to re-read and write back; None for a variable's token
    token: str = dataclasses.field(repr=False)
    refresh_token: str = dataclasses.field(default="", repr=False)
    expires_at: float | None = None  # epoch seconds; None: unknown
    account_id: str = ""
    token_url: str = ""
    refreshes: int = 0
    #: The token endpoint's last answer (its scope, ChatGPT's new id token), for the write-back.
    _answer: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    _lock: asyncio.Lock | None = dataclasses.field(default=None, repr=False)

    @property
    def plan_name(self) -> str:
        return "Claude plan" if self.kind == "claude" else "ChatGPT plan"

    @property
    def secrets(self) -> list[str]:
        """Everything a cassette or a log must never contain."""
        return [s for s in (self.token, self.refresh_token) if s]

    def expired(self, now: float | None = None) -> bool:
        if self.expires_at is None:
            return False
        return (now or time.time()) >= self.expires_at - EXPIRY_MARGIN_S

    def auth_headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.kind == "chatgpt" and self.account_id:
            headers["chatgpt-account-id"] = self.account_id
        return headers

    async def access_token(self) -> str:
        """The current token, refreshed first when it has expired."""
        if self.expired():
            await self.refresh(self.token)
        return self.token

    async def refresh(self, failed_token: str) -> None:
        """Get a new access token, unless someone (the user's own CLI, another request)
        already replaced `failed_token`. Raises `LoginError` with what to do."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.token != failed_token:
                return  # refreshed meanwhile
            self._reread()
            if self.token != failed_token and not self.expired():
                return  # the user's own CLI refreshed it
            if not self.refresh_token:
                raise LoginError(
                    f"The {self.plan_name} token from {self.where} was refused or has expired "
                    f"and cannot be refreshed here; {HOW_TO_LOG_IN[self.kind]} again, then "
                    f"restart the kernel."
                )
            answer = await self._post_refresh()
            self._adopt(answer)
            self.refreshes += 1
            self._write_back()

    async def _post_refresh(self) -> dict[str, Any]:
        if self.kind == "claude":
            body = {
                "grant_type": "refresh_token",
                "refresh_token": self.refresh_token,
                "client_id": CLAUDE_CLIENT_ID,
                "scope": CLAUDE_SCOPES,
            }
        else:
            body = {
                "grant_type": "refresh_token",
                "refresh_token": self.refresh_token,
                "client_id": CHATGPT_CLIENT_ID,
                "scope": "openid profile email",
            }
        from tornado import httpclient  # at a refresh, not at the kernel's start (~7 ms)

        request = httpclient.HTTPRequest(
            self.token_url,
            method="POST",
            body=json.dumps(body),
            headers={"Content-Type": "application/json"},
            request_timeout=30,
            connect_timeout=10,
        )
        try:
            response = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, httpclient.HTTPClientError) as exc:
            raise LoginError(
                f"Could not refresh the {self.plan_name} login ({self.token_url} did not "
                f"answer: {exc}). Try again, or {HOW_TO_LOG_IN[self.kind]}."
            ) from None
        try:
            answer = json.loads(response.body or b"")
        except json.JSONDecodeError:
            answer = None
        if response.code != 200 or not isinstance(answer, dict) or not answer.get("access_token"):
            raise LoginError(
                f"The {self.plan_name} login from {self.where} could not be refreshed "
                f"(HTTP {response.code}); {HOW_TO_LOG_IN[self.kind]} again, then restart the "
                f"kernel."
            )
        return answer

    def _adopt(self, answer: Mapping[str, Any]) -> None:
        self.token = str(answer["access_token"])
        self.refresh_token = str(answer.get("refresh_token") or self.refresh_token)
        if isinstance(answer.get("expires_in"), int | float):
            self.expires_at = time.time() + float(answer["expires_in"])
        else:
            self.expires_at = jwt_expiry(self.token)
        self._answer = dict(answer)

    def _reread(self) -> None:
        """Take what the file holds now (the user's own CLI may have refreshed it)."""
        if self.path is None:
            return
        with contextlib.suppress(LoginError):
            fresh = read_login(self.kind, self.path, self.token_url)
            if fresh is not None:
                self.token, self.refresh_token = fresh.token, fresh.refresh_token
                self.expires_at, self.account_id = fresh.expires_at, fresh.account_id

    def _write_back(self) -> None:
        """Store the refreshed login where the user's CLI reads it, keeping everything else."""
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            data = {}
        answer = self._answer
        if self.kind == "claude":
            oauth = dict(data.get("claudeAiOauth") or {})
            oauth.update(accessToken=self.token, refreshToken=self.refresh_token)
            if self.expires_at is not None:
                oauth["expiresAt"] = int(self.expires_at * 1000)
            if isinstance(answer.get("scope"), str):
                oauth["scopes"] = answer["scope"].split()
            data["claudeAiOauth"] = oauth
        else:
            tokens = dict(data.get("tokens") or {})
            tokens.update(access_token=self.token, refresh_token=self.refresh_token)
            if answer.get("id_token"):
                tokens["id_token"] = answer["id_token"]
            data["tokens"] = tokens
            data["last_refresh"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        write_atomically(self.path, json.dumps(data, indent=2))


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step (a reader sees the old file or the new, never half), private
    to the user like the CLIs keep it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` of a JWT access token (ChatGPT's are), without checking its signature:
    the upstream checks it; we only want to refresh in time."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, json.JSONDecodeError):
        return None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def read_login(kind: str, path: Path, token_url: str) -> Login | None:
    """The login in `path`, or None when the file holds none. Raises `LoginError` when the
    file exists but cannot be read."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise LoginError(f"Cannot read the login in {path}: {exc}") from None
    if not isinstance(data, dict):
        return None
    if kind == "claude":
        oauth = data.get("claudeAiOauth")
        if not isinstance(oauth, dict) or not oauth.get("accessToken"):
            return None
        expires = oauth.get("expiresAt")
        return Login(
            "claude",
            str(path),
            path,
            str(oauth["accessToken"]),
            refresh_token=str(oauth.get("refreshToken") or ""),
            expires_at=float(expires) / 1000 if isinstance(expires, int | float) else None,
            token_url=token_url,
        )
    tokens = data.get("tokens")
    if not isinstance(tokens, dict) or not tokens.get("access_token"):
        return None  # an API-key-only auth.json: that is OPENAI_API_KEY's business
    token = str(tokens["access_token"])
    return Login(
        "chatgpt",
        str(path),
        path,
        token,
        refresh_token=str(tokens.get("refresh_token") or ""),
        expires_at=jwt_expiry(token),
        account_id=str(tokens.get("account_id") or ""),
        token_url=token_url,
    )


@dataclasses.dataclass(frozen=True)
class LoginEndpoints:
    """Where plan logins are refreshed and where a ChatGPT login's traffic goes: the vendors'
    unless the kernel's settings say otherwise (a company proxy, a test's server)."""

    claude_token_url: str = CLAUDE_TOKEN_URL
    chatgpt_token_url: str = CHATGPT_TOKEN_URL
    chatgpt_base_url: str = CHATGPT_BASE_URL


VENDOR_ENDPOINTS = LoginEndpoints()


def find_login(
    kind: str, env: Mapping[str, str], endpoints: LoginEndpoints = VENDOR_ENDPOINTS
) -> Login | None:
    """The user's login of `kind` on this host, where the CLI keeps it; None if absent. `env`
    says where the CLI keeps it (HOME, CLAUDE_CODE_OAUTH_TOKEN, CLAUDE_CONFIG_DIR, CODEX_HOME)."""
    home = Path(env.get("HOME") or Path.home())
    if kind == "claude":
        url = endpoints.claude_token_url
        if token := env.get("CLAUDE_CODE_OAUTH_TOKEN", ""):
            return Login("claude", "$CLAUDE_CODE_OAUTH_TOKEN", None, token, token_url=url)
        config = (
            Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else home / ".claude"
        )
        return read_login("claude", config / ".credentials.json", url)
    if kind == "chatgpt":
        url = endpoints.chatgpt_token_url
        codex_home = Path(env["CODEX_HOME"]) if env.get("CODEX_HOME") else home / ".codex"
        return read_login("chatgpt", codex_home / "auth.json", url)
    raise ValueError(f"unknown login {kind!r}")


@dataclasses.dataclass(frozen=True)
class Choice:
    """Which credential a harness uses, said in words for `%agents`, and the upstream (None:
    offline rehearsal)."""

    source: str  # a key of SOURCE_LABELS
    upstream: Upstream | None
    detail: str = ""  # where it comes from, or how to get one

    @property
    def label(self) -> str:
        text = SOURCE_LABELS[self.source]
        return f"{text} ({self.detail})" if self.detail else text


def parse_preferences(text: str) -> dict[str, str]:
    """``claude=login,codex=api-key`` as a dict (checked later by `check_preferences`)."""
    pairs = (item.partition("=") for item in text.split(",") if item.strip())
    return {name.strip(): value.strip() for name, _, value in pairs}


def check_preferences(preferences: Mapping[str, str]) -> None:
    """Raise ValueError saying what is accepted, for a bad ``c.OmniKernel.credentials``."""
    for harness, wanted in preferences.items():
        if wanted not in PREFERENCES:
            raise ValueError(
                f"c.OmniKernel.credentials[{harness!r}] = {wanted!r} is not one of "
                f"{', '.join(PREFERENCES)}."
            )


def choose(
    config: UpstreamConfig,
    harness: str,
    wire: str,
    preference: str,
    login: Login | None = None,
    endpoints: LoginEndpoints = VENDOR_ENDPOINTS,
) -> Choice:
    """The credential `harness` uses. `login` is the user's login for it, if found.

    auto: an API key or a compatible gateway's base URL, else the login, else offline.
    api-key: only the configured key / base URL. login: only the login, sent to the configured
    base URL if one is set (a company proxy), else the vendor's. offline: the rehearsal model.
    """
    configured = resolve(config, wire)
    kind = LOGIN_OF_HARNESS.get(harness)
    if preference == "offline":
        return Choice("offline", None, "chosen in c.OmniKernel.credentials")
    if preference == "login" and kind is None:
        raise LoginError(
            f"{harness} cannot use a plan login (only {', '.join(LOGIN_OF_HARNESS)} can); "
            f"give it an API key or set c.OmniKernel.credentials[{harness!r}] = 'auto'."
        )
    if configured is not None and preference != "login":
        key_set = config.key_for(wire)
        return Choice("api-key" if key_set else "gateway", configured, configured.base_url)
    if kind is not None and preference in ("auto", "login") and login is not None:
        return Choice("login", login_upstream(config, wire, login, endpoints), login.where)
    if preference == "login":
        raise LoginError(
            f"c.OmniKernel.credentials says {harness} uses a plan login, but none was found: "
            f"{HOW_TO_LOG_IN[kind or 'claude']}, then restart the kernel."
        )
    if preference == "api-key":
        var = " or ".join(KEY_VARS.get(wire, ("an API key",)))
        raise LoginError(f"c.OmniKernel.credentials says {harness} uses an API key; set {var}.")
    how = f"; to use your plan, {HOW_TO_LOG_IN[kind]}" if kind else ""
    return Choice("offline", None, "no API key or login found" + how)


def login_upstream(
    config: UpstreamConfig, wire: str, login: Login, endpoints: LoginEndpoints = VENDOR_ENDPOINTS
) -> Upstream:
    """Where a login's traffic goes: the vendor (or the configured base URL)."""
    if login.kind == "claude":
        base = config.anthropic_base_url or ANTHROPIC_DEFAULT_URL
    else:
        # With a ChatGPT login Codex talks to the ChatGPT backend, not api.openai.com.
        base = endpoints.chatgpt_base_url
    return Upstream(wire=wire, base_url=base.rstrip("/"), api_key="", login=login)
