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

The notebook's folder is *trusted* (``GEMINI_CLI_TRUST_WORKSPACE``): Gemini CLI connects MCP
servers, the kernel's notebook tools among them, only in a trusted folder. What a trusted folder
would let its ``.gemini/`` change cannot loosen the policy: the agent cannot write ``.gemini/``
(a protected path of the sandbox, like ``.omnikernel/``); our ask rules are user-tier, above any
workspace policy or ``tools.allowed``; the approval mode is named on the command line
(``--approval-mode default``), above a workspace's ``defaultApprovalMode``. A cloned
repository's ``.gemini/`` is tested to change none of that (``tests/test_contract.py``).
Gemini CLI names an MCP tool ``mcp_SERVER_TOOL``; the adapter turns it into the
``mcp__SERVER__TOOL`` the rest of omnikernel reads.
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
        # The approval mode is named: the notebook's folder is trusted (for MCP), and a
        # trusted folder's settings could otherwise choose `auto_edit`.
        model = self.ctx.model or self.default_model or ""
        return [binary, "--acp", "--approval-mode", "default", "--model", model]

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
            "GEMINI_CLI_TRUST_WORKSPACE": "true",
            "GEMINI_TELEMETRY_ENABLED": "false",
            "NO_BROWSER": "true",
        }

    def _tool_name(self, call: dict[str, Any]) -> str:  # type: ignore[override]
        """The tool's name from its call id (``NAME__<n>``). Gemini CLI names an MCP tool
        ``mcp_SERVER_TOOL``, which cannot be split where a server's name has an underscore:
        the servers this CLI was given say where, and the name becomes the
        ``mcp__SERVER__TOOL`` the policy's tool rules and the notebook server read."""
        name, sep, _ = str(call.get("toolCallId", "")).partition("__")
        if not (sep and name):
            return AcpHarness._tool_name(call)
        for server in sorted((s.name for s in self.mcp_servers), key=len, reverse=True):
            if name.startswith(f"mcp_{server}_") and len(name) > len(server) + 5:
                return f"mcp__{server}__{name[len(server) + 5 :]}"
        return name

    def _raw_input(self, call: dict[str, Any]) -> dict[str, Any]:
        raw = super()._raw_input(call)
        if not raw and call.get("kind") == "execute" and isinstance(call.get("title"), str):
            return {"command": call["title"]}
        return raw
