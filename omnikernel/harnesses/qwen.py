"""Qwen Code (`@qwen-code/qwen-code`, a Gemini CLI fork for OpenAI-compatible APIs) through its
Agent Client Protocol mode (``qwen --acp``).

The ACP conversation is the generic `AcpHarness`'s. Qwen Code reads its OpenAI-compatible
endpoint the way it documents: ``--auth-type openai`` with ``OPENAI_API_KEY`` (the session's
gateway secret) and ``OPENAI_BASE_URL`` (the gateway's ``/v1`` path for this harness); it calls
``/chat/completions``, streamed with usage. Its settings (``$QWEN_HOME/settings.json`` in a
private home) turn off telemetry, usage statistics and the auto-updater.

Approvals: ``--approval-mode default``, always. Qwen Code's own default in ACP mode is
``auto``, where a model classifier of its own approves "safe" tool calls; that would decide
without the session's policy ever seeing the call. In ``default`` mode every shell command and
file edit is a ``session/request_permission`` the decision function answers (reads, globs and
searches run without asking, as in every ACP agent). The mode alone still runs the shell
commands Qwen Code deems read-only without asking; the settings' ``permissions.ask: ["Bash"]``
(Claude-style rules) make those ask too.

Prices: the model is whatever the endpoint serves (Qwen on DashScope, a local model behind
Ollama or vLLM, an OpenAI model); the gateway prices it from genai-prices' OpenAI table, which
knows no Qwen model, so a USD budget asks for a price (``c.OmniKernel.prices``) first.
"""

from __future__ import annotations

import json

from omnikernel.harnesses.acp import AcpAgent, AcpHarness

QWEN_CODE_VERSION = "0.24.4"

#: Qwen Code's user settings: no traffic but the model calls.
SETTINGS = {
    "general": {"disableAutoUpdate": True, "enableAutoUpdate": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    # Every shell command asks, also those it deems read-only (`cat`, `ls`), which its
    # `default` mode runs without asking (so the policy never saw them).
    "permissions": {"ask": ["Bash"]},
}


class QwenHarness(AcpHarness):
    name = "qwen"
    display_name = "Qwen Code"
    binary_name = "qwen"
    npm_package = "@qwen-code/qwen-code"
    pinned_version = QWEN_CODE_VERSION
    wire = "openai"
    agent = AcpAgent(("qwen", "--acp"), "openai", f"@qwen-code/qwen-code@{QWEN_CODE_VERSION}")

    def command(self, binary: str) -> list[str]:
        argv = [binary, "--acp", "--auth-type", "openai", "--approval-mode", "default"]
        return argv + (["--model", self.ctx.model] if self.ctx.model else [])

    def environment(self) -> dict[str, str]:
        dirs = self.private_dirs()
        home = dirs["config"] / "qwen"
        home.mkdir(parents=True, exist_ok=True)
        (home / "settings.json").write_text(json.dumps(SETTINGS, indent=2))
        return {
            **self.base_environment(dirs),
            "XDG_CONFIG_HOME": str(dirs["config"]),
            "QWEN_HOME": str(home),
            "OPENAI_API_KEY": self.ctx.upstream.api_key,
            "OPENAI_BASE_URL": self.upstream.base_url,
            "QWEN_CODE_NO_RELAUNCH": "true",
            "QWEN_TELEMETRY_ENABLED": "false",
            "NO_BROWSER": "true",
        }
