"""Where the harnesses' model traffic goes: a vendor API, a compatible gateway, or offline.

Resolved once per session from the kernel's config and environment, the standard way
(``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_API_KEY``, ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``, and
as Gemini CLI reads them, ``GOOGLE_GEMINI_BASE_URL`` / ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``).
With no credentials at all, the session runs the offline rehearsal model (the scripted fake
model server with a scenario shipped beside the notebook, or the package's default) and every
output it affects says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ANTHROPIC_DEFAULT_URL = "https://api.anthropic.com"
OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
GEMINI_DEFAULT_URL = "https://generativelanguage.googleapis.com"
#: Where each wire format's key is read from, in order (Gemini CLI's own order).
KEY_VARS = {
    "anthropic": ("ANTHROPIC_API_KEY",),
    "openai": ("OPENAI_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}
#: What the gateway sends upstream to a compatible gateway configured without a key.
PLACEHOLDER_KEY = "omnikernel-placeholder-key"
REHEARSAL_SUFFIX = ".rehearsal.json"


@dataclasses.dataclass(frozen=True)
class Upstream:
    """One model endpoint for one wire format."""

    wire: str  # "anthropic" | "openai" | "gemini"
    base_url: str
    api_key: str = dataclasses.field(repr=False)  # never in a message or a log line
    offline: bool = False
    #: A plan login (`omnikernel.gateway.credentials.Login`) the gateway authenticates with instead of
    #: `api_key`; on the agent's side, True-ish means "send the secret as a plan login would".
    login: Any = dataclasses.field(default=None, repr=False, compare=False)
    #: Where a sandbox's bridge reaches `base_url`'s port on the host: a unix socket (the
    #: model gateway's); None: the same loopback TCP port.
    socket: Path | None = None
    #: Offline only: the model (``vendor/model`` or ``model``) the gateway prices the rehearsal
    #: model's calls as, when its scenario asks (`Scenario.price_as`); empty, they cost $0.
    price_as: str = ""

    @property
    def label(self) -> str:
        if self.offline:
            return "offline rehearsal model"
        if self.login is not None and hasattr(self.login, "plan_name"):
            return f"{self.base_url} ({self.login.plan_name} login)"
        return self.base_url

    @property
    def versioned(self) -> bool:
        """Whether OpenAI paths go under ``/v1`` (the ChatGPT backend's do not)."""
        return not (self.login is not None and getattr(self.login, "kind", "") == "chatgpt")


@dataclasses.dataclass(frozen=True)
class UpstreamConfig:
    """What the user configured; empty strings mean "not set"."""

    anthropic_base_url: str = ""
    anthropic_api_key: str = ""
    openai_base_url: str = ""
    openai_api_key: str = ""
    gemini_base_url: str = ""
    gemini_api_key: str = ""

    def key_for(self, wire: str) -> str:
        return {
            "anthropic": self.anthropic_api_key,
            "openai": self.openai_api_key,
            "gemini": self.gemini_api_key,
        }.get(wire, "")

    def merged_with_env(self, env: Mapping[str, str]) -> UpstreamConfig:
        """Config wins over the environment, field by field."""
        return UpstreamConfig(
            anthropic_base_url=self.anthropic_base_url or env.get("ANTHROPIC_BASE_URL", ""),
            anthropic_api_key=self.anthropic_api_key or env.get("ANTHROPIC_API_KEY", ""),
            openai_base_url=self.openai_base_url or env.get("OPENAI_BASE_URL", ""),
            openai_api_key=self.openai_api_key or env.get("OPENAI_API_KEY", ""),
            gemini_base_url=self.gemini_base_url or env.get("GOOGLE_GEMINI_BASE_URL", ""),
            gemini_api_key=self.gemini_api_key
            or env.get("GEMINI_API_KEY", "")
            or env.get("GOOGLE_API_KEY", ""),
        )


def resolve(config: UpstreamConfig, wire: str) -> Upstream | None:
    """The configured upstream for `wire`, or None when nothing is configured (offline).

    A base URL without a key is a compatible gateway (Ollama, vLLM, a company proxy) that needs
    no key: it gets the placeholder. A key without a base URL is the vendor's API."""
    if wire == "anthropic":
        url, key, default = (
            config.anthropic_base_url,
            config.anthropic_api_key,
            ANTHROPIC_DEFAULT_URL,
        )
    elif wire == "openai":
        url, key, default = config.openai_base_url, config.openai_api_key, OPENAI_DEFAULT_URL
    elif wire == "gemini":
        url, key, default = config.gemini_base_url, config.gemini_api_key, GEMINI_DEFAULT_URL
    else:
        raise ValueError(f"unknown wire format {wire!r}")
    if not url and not key:
        return None
    return Upstream(
        wire=wire, base_url=(url or default).rstrip("/"), api_key=key or PLACEHOLDER_KEY
    )


def rehearsal_scenario_path(notebook: Path | None, configured: str = "") -> Path | None:
    """The scenario the offline model plays: configured, else `<notebook>.rehearsal.json`
    beside the notebook, else None (the package's default scenario)."""
    if configured:
        return Path(configured)
    if notebook is not None:
        candidate = notebook.with_name(notebook.stem + REHEARSAL_SUFFIX)
        if candidate.is_file():
            return candidate
    return None
