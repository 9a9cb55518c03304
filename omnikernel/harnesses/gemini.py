"""Gemini CLI (`@google/gemini-cli`) through its Agent Client Protocol mode (``gemini --acp``).

Everything of the ACP conversation (turns, approvals through the decision function, stops,
``session/load`` after a restart) is the generic `AcpHarness`'s; this adapter gives Gemini CLI
what it reads, the way it reads it: the Gemini API key in ``GEMINI_API_KEY`` (the session's
gateway secret, never the user's key) and the gateway as a compatible endpoint in
``GOOGLE_GEMINI_BASE_URL``; a private ``~/.gemini/settings.json`` that turns off usage
statistics, telemetry and the auto-updater (no traffic but the model's) and selects API-key
auth. The model is always named (``-m``): with none, Gemini CLI's "auto" routing makes an
extra classifier call to a second model before every turn.

Gemini CLI's ACP updates carry no ``rawInput``: the tool's name is the prefix of its call id
(``run_shell_command__run_shell_command_<time>_<n>``) and a shell call's title is its command,
which is what the policy reads as its input (``{"command": title}``).

The working directory stays *untrusted* to Gemini CLI (no ``GEMINI_CLI_TRUST_WORKSPACE``):
a trusted folder's ``.gemini/settings.json`` could pre-approve tools, and the agent can write
that file itself.
"""

from __future__ import annotations

import json
from typing import Any

from omnikernel.harnesses.acp import AcpAgent, AcpHarness

GEMINI_CLI_VERSION = "0.61.0"

#: Gemini CLI's user settings: no traffic but the model calls, API-key auth.
SETTINGS = {
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "security": {"auth": {"selectedType": "gemini-api-key"}},
}


#: Gemini CLI's policy engine (``~/.gemini/policies/``): every shell command, write and edit asks. Left to
#: itself it turns "ask" into "allow" for the shell commands it deems safe (``cat``, ``ls``,
#: ``grep``, ``head``, ``wc``...: its ``isKnownSafeCommand`` list), so the kernel's policy never
#: saw them and ``%policy add deny cat`` did nothing; it skips that heuristic for a rule with
#: an ``argsPattern``, hence one that matches any arguments (their JSON is one line).
POLICY = """
[[rule]]
toolName = "run_shell_command"
argsPattern = ".*"
decision = "ask_user"
priority = 900

[[rule]]
toolName = ["write_file", "replace"]
decision = "ask_user"
priority = 900
"""


class GeminiHarness(AcpHarness):
    name = "gemini"
    display_name = "Gemini"
    binary_name = "gemini"
    npm_package = "@google/gemini-cli"
    pinned_version = GEMINI_CLI_VERSION
    wire = "gemini"
    default_model = "gemini-2.5-flash"
    agent = AcpAgent(("gemini", "--acp"), "gemini", f"@google/gemini-cli@{GEMINI_CLI_VERSION}")
    #: Gemini CLI 0.61.0 advertises ``loadSession``, but in ACP mode its chat file keeps only
    #: the session's opening context, never the turns: ``session/load`` then fails ("No
    #: previous sessions found for this project"). A restarted CLI starts a new ACP session
    #: and is handed the conversation instead.
    loads_sessions = False

    def command(self, binary: str) -> list[str]:
        return [binary, "--acp", "--model", self.ctx.model or self.default_model or ""]

    def environment(self) -> dict[str, str]:
        dirs = self.private_dirs()
        settings = dirs["home"] / ".gemini" / "settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(SETTINGS, indent=2))
        # The user tier's policy folder (its ACP mode ignores `--policy`).
        policies = settings.parent / "policies"
        policies.mkdir(exist_ok=True)
        (policies / "omnikernel.toml").write_text(POLICY)
        return {
            **self.base_environment(dirs),
            "XDG_CONFIG_HOME": str(dirs["config"]),
            "GEMINI_API_KEY": self.ctx.upstream.api_key,
            "GOOGLE_GEMINI_BASE_URL": self.upstream.base_url,
            "GEMINI_CLI_NO_RELAUNCH": "true",
            "GEMINI_TELEMETRY_ENABLED": "false",
            "NO_BROWSER": "true",
        }

    @staticmethod
    def _tool_name(call: dict[str, Any]) -> str:
        name, sep, _ = str(call.get("toolCallId", "")).partition("__")
        return name if sep and name else AcpHarness._tool_name(call)

    def _raw_input(self, call: dict[str, Any]) -> dict[str, Any]:
        raw = super()._raw_input(call)
        if not raw and call.get("kind") == "execute" and isinstance(call.get("title"), str):
            return {"command": call["title"]}
        return raw
