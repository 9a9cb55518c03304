"""OpenCode (`opencode-ai`) through its Agent Client Protocol server (``opencode acp``).

The ACP conversation is the generic `AcpHarness`'s. OpenCode runs any provider; here it uses
its built-in Anthropic provider pointed at the session's gateway, configured the way OpenCode
is configured: a config document in ``OPENCODE_CONFIG_CONTENT`` whose provider ``baseURL`` is
the gateway's and whose ``apiKey`` is ``{env:ANTHROPIC_API_KEY}`` (OpenCode's own variable
substitution: the gateway secret stays in the environment, not in a document it may echo).

What it must not do on its own: fetch the model catalogue from models.dev, update itself,
download language servers, share sessions, or read a project ``opencode.json`` (the agent can
write one into the working directory, and it could turn every ``ask`` below into ``allow``):
each is switched off by its ``OPENCODE_DISABLE_*`` variable. Its permissions ``ask`` for
every shell command, edit, fetch and path outside the working directory, so each one is a
``session/request_permission`` for the session's decision function. Its first ``tool_call``
update carries only the working directory (``{"cwd": ...}``); the call is shown once its
input is known; its title is the tool's name (``bash``), later titles are the command, so the
name is kept from that first update.
"""

from __future__ import annotations

import json
from typing import Any

from omnikernel.events import Event
from omnikernel.harnesses.acp import AcpAgent, AcpHarness
from omnikernel.harnesses.base import HarnessContext

OPENCODE_VERSION = "1.18.33"
#: Where OpenCode would otherwise reach out, or take configuration the agent could write.
QUIET_ENV = {
    "OPENCODE_DISABLE_MODELS_FETCH": "true",
    "OPENCODE_DISABLE_AUTOUPDATE": "true",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "true",
    "OPENCODE_DISABLE_SHARE": "true",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "true",
    "OPENCODE_DISABLE_CLAUDE_CODE": "true",
    "OPENCODE_DISABLE_PROJECT_CONFIG": "true",
}
ASKED = ("bash", "edit", "webfetch", "external_directory")


class OpenCodeHarness(AcpHarness):
    name = "opencode"
    display_name = "OpenCode"
    binary_name = "opencode"
    npm_package = "opencode-ai"
    pinned_version = OPENCODE_VERSION
    wire = "anthropic"
    default_model = "claude-sonnet-4-5"
    agent = AcpAgent(("opencode", "acp"), "anthropic", f"opencode-ai@{OPENCODE_VERSION}")

    def __init__(self, ctx: HarnessContext):
        super().__init__(ctx)
        self._tool_names: dict[str, str] = {}  # call id -> tool name, from its first update

    def command(self, binary: str) -> list[str]:
        return [binary, "acp"]

    def config(self) -> dict[str, object]:
        model = f"anthropic/{self.ctx.model or self.default_model}"
        return {
            "$schema": "https://opencode.ai/config.json",
            "autoupdate": False,
            "share": "disabled",
            "model": model,
            "small_model": model,
            "provider": {
                "anthropic": {
                    "options": {
                        "baseURL": self.upstream.base_url.rstrip("/") + "/v1",
                        "apiKey": "{env:ANTHROPIC_API_KEY}",
                    }
                }
            },
            "permission": dict.fromkeys(ASKED, "ask"),
        }

    def environment(self) -> dict[str, str]:
        dirs = self.private_dirs()
        return {
            **self.base_environment(dirs),
            "XDG_CONFIG_HOME": str(dirs["config"]),
            "XDG_DATA_HOME": str(dirs["home"] / ".local" / "share"),
            "XDG_CACHE_HOME": str(dirs["home"] / ".cache"),
            "XDG_STATE_HOME": str(dirs["home"] / ".local" / "state"),
            "ANTHROPIC_API_KEY": self.ctx.upstream.api_key,
            "OPENCODE_CONFIG_CONTENT": json.dumps(self.config()),
            **QUIET_ENV,
        }

    def _raw_input(self, call: dict[str, Any]) -> dict[str, Any]:
        raw = super()._raw_input(call)
        return {} if set(raw) <= {"cwd"} else raw

    def _update(self, update: dict[str, Any], shown: set[str]) -> list[Event]:
        if update.get("sessionUpdate") == "tool_call" and isinstance(update.get("title"), str):
            self._tool_names.setdefault(str(update.get("toolCallId", "")), update["title"])
        return super()._update(update, shown)

    def _tool_call(self, call: dict[str, Any]) -> Event:
        event = super()._tool_call(call)
        if name := self._tool_names.get(str(call.get("toolCallId", ""))):
            event.data["tool"] = name
        return event
