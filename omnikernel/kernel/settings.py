"""The kernel's settings: ``c.OmniKernel.*`` in ``omnikernel_config.py``, or their environment
variables. `KernelSettings` is a base class of `OmniKernel`; the kernel reads the settings once,
when it starts, and passes the values to the session and the layers below it.

Every setting is a traitlets trait with help text and ``config=True``; one that has an
environment variable names it in its metadata (``.tag(config=True, env="OMNIKERNEL_STORE")``)
and its ``@default`` reads it, so a config file's value wins over the environment and the
environment over the built-in default. `docs/gen_configuration.py` lists every trait, its
default and its variable in docs/configuration.md.

Invariants:

- Nothing below this layer reads an ``OMNIKERNEL_*`` setting's variable: the kernel, the command
  line and the server extension read them here (`KernelSettings`, `SessionFiles`) and pass the
  values down.
- A variable the setting cannot take (``OMNIKERNEL_APPROVAL_TIMEOUT=soon``) is a `SettingError`
  naming the variable and what it takes. A kernel does not die of it: the setting keeps its
  default and the message is logged and kept in `EnvSettings.setting_problems` (the kernel says
  it in the first prompt cell).
- Variables that carry a value from one process to another rather than configure anything
  (`HANDOFFS`) are read in one place each and documented with the settings.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from traitlets import Bool, Dict, Float, Int, List, Unicode, default
from traitlets.config import LoggingConfigurable

from omnikernel.approvals.pending import DEFAULT_TIMEOUT_S
from omnikernel.gateway.credentials import (
    CHATGPT_BASE_URL,
    CHATGPT_TOKEN_URL,
    CLAUDE_TOKEN_URL,
    LoginEndpoints,
    parse_preferences,
)
from omnikernel.sandbox.upstream import EgressRoutes, RouteError, check_ca_file, parse_resolve
from omnikernel.session.core import (
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_RECYCLE_AFTER_MIB,
    DEFAULT_RECYCLE_AFTER_TURNS,
    DEFAULT_WATCHDOG_S,
)
from omnikernel.session.identity import JUPYTER_SESSION_ENV, NOTEBOOK_ID_ENV, SESSION_ID_ENV
from omnikernel.store.sessions import default_store_path

T = TypeVar("T")

STORE_ENV = "OMNIKERNEL_STORE"
STATE_DIR_ENV = "OMNIKERNEL_STATE_DIR"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class SettingError(ValueError):
    """An environment variable holds a value its setting cannot take; the message names the
    variable and says what it takes."""


def parse_bool(variable: str, raw: str) -> bool:
    """``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off`` (any case)."""
    word = raw.strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise SettingError(
        f"{variable}={raw!r} is not a yes or no: it takes {', '.join(TRUE_WORDS)} "
        f"or {', '.join(FALSE_WORDS)}."
    )


def seconds_parser(*, zero_ok: bool) -> Callable[[str, str], float]:
    """A parser of a number of seconds: > 0, or >= 0 when `zero_ok` (0 meaning off)."""

    def parse(variable: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if math.isfinite(value) and (value >= 0 if zero_ok else value > 0):
            return value
        least = "0 or more (0: off)" if zero_ok else "more than 0"
        raise SettingError(f"{variable}={raw!r} is not a number of seconds: it takes {least}.")

    return parse


def parse_count(variable: str, raw: str) -> int:
    """A whole number, 0 or more (0 meaning off)."""
    if raw.strip().isdigit():
        return int(raw.strip())
    raise SettingError(f"{variable}={raw!r} is not a whole number: it takes 0 or more (0: off).")


def parse_mib(variable: str, raw: str) -> float:
    """A size in MiB, 0 or more (0 meaning off)."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value >= 0:
        return value
    raise SettingError(f"{variable}={raw!r} is not a size in MiB: it takes 0 or more (0: off).")


def parse_resolve_variable(variable: str, raw: str) -> dict[str, str]:
    """``host:port=address:port`` entries, comma-separated (curl's ``host:port:address`` too)."""
    try:
        routes = parse_resolve(raw.split(","))
    except RouteError as exc:
        raise SettingError(f"{variable}={raw!r}: {exc}") from None
    return {f"{h}:{p}": f"{a}:{q}" for (h, p), (a, q) in routes.items()}


def parse_ca_file(variable: str, raw: str) -> str:
    """A CA bundle the TLS library can load."""
    try:
        return str(check_ca_file(raw))
    except RouteError as exc:
        raise SettingError(f"{variable}={raw!r}: {exc}") from None


class EnvSettings(LoggingConfigurable):
    """Settings whose defaults may come from the environment (see the module docstring)."""

    setting_problems = List(
        Unicode(),
        help="What was wrong with the environment's values (each left out for the default).",
    )

    def from_env(self, name: str, fallback: T, parse: Callable[[str, str], T] | None = None) -> T:
        """Trait `name`'s default: its variable's value (through `parse`), else `fallback`.
        An empty variable counts as unset; a bad one is noted and gives `fallback`."""
        variable = self.traits()[name].metadata["env"]
        raw = os.environ.get(variable, "").strip()
        if not raw:
            return fallback
        if parse is None:
            return raw  # type: ignore[return-value]
        try:
            return parse(variable, raw)
        except SettingError as exc:
            problem = f"{exc} It is ignored: {self.config_name(name)} is {fallback!r}."
            self.log.warning("%s", problem)
            self.setting_problems = [*self.setting_problems, problem]
            return fallback

    def config_name(self, name: str) -> str:
        return f"c.{type(self).__name__}.{name}"

    def env_problems(self) -> list[str]:
        """Read every setting of this class (so each variable is checked now) and return
        what was wrong with the environment's values."""
        for name in self.env_traits():
            getattr(self, name)
        return list(self.setting_problems)

    @classmethod
    def env_traits(cls) -> dict[str, Any]:
        """The settings that have an environment variable, by name."""
        return {n: t for n, t in cls.class_traits(config=True).items() if t.metadata.get("env")}


class KernelSettings(EnvSettings):
    """What ``c.OmniKernel`` configures (`OmniKernel` derives from this class)."""

    default_harness = Unicode("claude", help="Harness that plain prompt cells go to.").tag(
        config=True, env="OMNIKERNEL_HARNESS"
    )
    default_model = Unicode(
        "", help="Model for the default harness; empty: the CLI's default."
    ).tag(config=True, env="OMNIKERNEL_MODEL")
    harness_paths = Dict(
        help="Explicit CLI paths by harness name, e.g. {'claude': '/opt/bin/claude'}; "
        "harnesses not listed are found on PATH."
    ).tag(config=True)
    acp_agents = Dict(
        help="Agents spoken to over the Agent Client Protocol, by name: {'codex-acp': "
        "{'command': ['codex-acp'], 'wire': 'openai'}} (a bare command list works too). "
        "'claude-acp' (@zed-industries/claude-code-acp) is known out of the box.",
    ).tag(config=True)
    auto_approve = Bool(
        False,
        help="Approve every permission request no rule decides (the default ask of a "
        "non-read-only action), for headless runs; `%autoapprove` changes it. Never answers a "
        "rule's ask, a pause or a deny.",
    ).tag(config=True, env="OMNIKERNEL_AUTO_APPROVE")
    approval_timeout = Float(
        DEFAULT_TIMEOUT_S,
        help="Seconds an approval waits for a person before it is denied (0 or less: the default).",
    ).tag(config=True, env="OMNIKERNEL_APPROVAL_TIMEOUT")
    store_path = Unicode(
        help="The session store (one SQLite file of every session's events); the server "
        "extension and the command line must use the same one (c.SessionFiles.store).",
    ).tag(config=True, env=STORE_ENV, default_text="<jupyter data dir>/omnikernel/sessions.sqlite3")
    state_dir = Unicode(
        help="Where the harness CLIs' private homes live, one folder per session.",
    ).tag(config=True, env=STATE_DIR_ENV, default_text="harness-state beside the store")
    anthropic_base_url = Unicode(
        "",
        help="Anthropic-compatible endpoint (Claude Code, pi); with no key, a gateway that "
        "needs none (a local model server, a company proxy).",
    ).tag(config=True, env="ANTHROPIC_BASE_URL")
    anthropic_api_key = Unicode("", help="Anthropic API key.").tag(
        config=True, env="ANTHROPIC_API_KEY"
    )
    openai_base_url = Unicode(
        "", help="OpenAI-compatible endpoint (Codex); with no key, a gateway that needs none."
    ).tag(config=True, env="OPENAI_BASE_URL")
    openai_api_key = Unicode("", help="OpenAI API key.").tag(config=True, env="OPENAI_API_KEY")
    gemini_base_url = Unicode(
        "",
        help="Gemini-API-compatible endpoint (Gemini CLI), read as Gemini CLI reads it; with no "
        "key, a gateway that needs none.",
    ).tag(config=True, env="GOOGLE_GEMINI_BASE_URL")
    gemini_api_key = Unicode(
        "", help="Gemini API key (GOOGLE_API_KEY is read too when GEMINI_API_KEY is unset)."
    ).tag(config=True, env="GEMINI_API_KEY")
    credentials = Dict(
        help="Which credential each harness uses: auto (an API key or base URL, else your plan "
        "login, else the offline rehearsal model), api-key, login or offline, e.g. "
        "{'claude': 'login'}. Plan logins: Claude Code's (claude, CLAUDE_CODE_OAUTH_TOKEN) "
        "and Codex's ChatGPT login (codex login). The variable takes "
        "'claude=login,codex=api-key'.",
    ).tag(config=True, env="OMNIKERNEL_CREDENTIALS")
    claude_token_url = Unicode(
        CLAUDE_TOKEN_URL,
        help="Where a Claude plan login is refreshed (a company proxy, or a test's server).",
    ).tag(config=True, env="OMNIKERNEL_CLAUDE_TOKEN_URL")
    chatgpt_token_url = Unicode(
        CHATGPT_TOKEN_URL,
        help="Where a ChatGPT plan login is refreshed (a company proxy, or a test's server).",
    ).tag(config=True, env="OMNIKERNEL_CHATGPT_TOKEN_URL")
    chatgpt_base_url = Unicode(
        CHATGPT_BASE_URL,
        help="Where Codex's traffic goes with a ChatGPT plan login (the ChatGPT backend).",
    ).tag(config=True, env="OMNIKERNEL_CHATGPT_BASE_URL")
    budget_usd = Float(
        None, allow_none=True, help="Session spend cap in USD; `%budget` changes it."
    ).tag(config=True)
    budget_tokens = Int(
        None,
        allow_none=True,
        help="Session cap in metered tokens (input + cache writes + output; cache reads do not "
        "count), e.g. 2_000_000; `%budget 2M tokens` changes it. With budget_usd too, whichever "
        "is reached first stops the session.",
    ).tag(config=True)
    prices = Dict(
        help="Price overrides, USD per million tokens: {'anthropic/claude-x': {'input': 3, "
        "'output': 15, 'cacheRead': 0.3, 'cacheWrite': 3.75}} (a bare model name applies to "
        "every vendor)."
    ).tag(config=True)
    sandbox = Unicode(
        "auto",
        help="OS sandbox for agents: auto (bwrap, else firejail), bwrap, firejail, or off "
        "(an explicit, loudly shown opt-out).",
    ).tag(config=True, env="OMNIKERNEL_SANDBOX")
    sandbox_allow = List(
        Unicode(),
        help="Hosts agents may reach through the kernel's egress proxy without asking: 'host' "
        "(ports 80, 443), 'host:port', '*.domain' or a preset, e.g. ['@pypi', '@npm', "
        "'registry.example.com']. `%sandbox allow` adds more; any other host asks when a "
        "command connects to it.",
    ).tag(config=True)
    sandbox_broker = List(
        Unicode(),
        help="Brokered hosts: the egress proxy terminates their TLS with a per-session CA and "
        "adds your own credential (git credential helper, `gh auth token`, ~/.npmrc, or the "
        "environment variable named as 'host=VAR'), so none enters the sandbox; git pushes "
        "to them go through the policy. A brokered host is also an allowed host. E.g. "
        "['github.com']. `%sandbox broker` adds more.",
    ).tag(config=True)
    egress_ca = Unicode(
        "",
        help="A CA bundle (PEM) the egress proxy trusts upstream besides the system's, for a "
        "network that inspects TLS with its own CA (where the proxy itself verifies TLS).",
    ).tag(config=True, env="OMNIKERNEL_EGRESS_CA")
    egress_resolve = Dict(
        Unicode(),
        help="Where the egress proxy really connects for a host, the way `curl --resolve` "
        "pins one: {'pypi.org:443': '10.0.0.5:443'} (split DNS, or a local stand-in). The "
        "policy, the approval card and TLS still see the real name. The variable takes "
        "'pypi.org:443=10.0.0.5:443,registry.npmjs.org:443=10.0.0.6:443'.",
    ).tag(config=True, env="OMNIKERNEL_EGRESS_RESOLVE")
    sandbox_readable = List(
        Unicode(),
        help="Paths under a home directory agents may read (the home is closed to them "
        "otherwise), e.g. ['~/datasets']. `%sandbox read PATH` adds more.",
    ).tag(config=True)
    prewarm = Bool(
        True,
        help="Start the current harness's CLI (the one the notebook's session used last, else "
        "the default) in its sandbox as the kernel starts (and on `%agent NAME`), so the first "
        "prompt does not wait for it. No model request is made.",
    ).tag(config=True, env="OMNIKERNEL_PREWARM")
    notebook_tools = Bool(
        True,
        help="Give every agent the kernel's `notebook` MCP server: the notebook's cells, the "
        "kernel's variables, a value's summary, Python run in the kernel (each call asks), a "
        "proposed cell. Off: agents get only the user's mcp.toml servers.",
    ).tag(config=True, env="OMNIKERNEL_NOTEBOOK_TOOLS")
    watchdog_s = Float(
        DEFAULT_WATCHDOG_S,
        help="Seconds a harness may stay silent mid-turn before a watchdog ends the turn and "
        "stops it (the next cell starts it again, resuming); 0 turns the watchdog off.",
    ).tag(config=True, env="OMNIKERNEL_WATCHDOG_S")
    idle_harness_timeout = Float(
        DEFAULT_IDLE_TIMEOUT_S,
        help="Seconds a harness may go unused (no turn) before its CLI is stopped to free its "
        "memory; its next prompt starts it again, resuming the conversation. A CLI that keeps "
        "background processes running is left alone. 0: never stop an idle CLI.",
    ).tag(config=True, env="OMNIKERNEL_IDLE_HARNESS_TIMEOUT")
    recycle_after_turns = Int(
        DEFAULT_RECYCLE_AFTER_TURNS,
        help="Restart a harness's CLI after this many turns of its process, between turns "
        "(resuming, started again at once so the next prompt does not wait): Claude Code's "
        "memory grows with its conversation. Never during a turn, nor with background "
        "processes running. 0: never.",
    ).tag(config=True, env="OMNIKERNEL_RECYCLE_AFTER_TURNS")
    recycle_after_mib = Float(
        DEFAULT_RECYCLE_AFTER_MIB,
        help="Restart a harness's CLI, as recycle_after_turns does, once its processes hold "
        "this many MiB of resident memory. 0: never.",
    ).tag(config=True, env="OMNIKERNEL_RECYCLE_AFTER_MIB")
    rehearsal_scenario = Unicode(
        "",
        help="Scenario file for the offline rehearsal model; default <notebook>.rehearsal.json "
        "beside the notebook, else the package's default scenario.",
    ).tag(config=True)

    # -- defaults from the environment ---------------------------------------------------------

    @default("default_harness")
    def _default_harness_default(self) -> str:
        return self.from_env("default_harness", "claude")

    @default("default_model")
    def _default_model_default(self) -> str:
        return self.from_env("default_model", "")

    @default("auto_approve")
    def _auto_approve_default(self) -> bool:
        return self.from_env("auto_approve", False, parse_bool)

    @default("approval_timeout")
    def _approval_timeout_default(self) -> float:
        return self.from_env("approval_timeout", DEFAULT_TIMEOUT_S, seconds_parser(zero_ok=False))

    @default("store_path")
    def _store_path_default(self) -> str:
        return self.from_env("store_path", str(default_store_path()))

    @default("state_dir")
    def _state_dir_default(self) -> str:
        return self.from_env("state_dir", str(Path(self.store_path).parent / "harness-state"))

    @default("anthropic_base_url")
    def _anthropic_base_url_default(self) -> str:
        return self.from_env("anthropic_base_url", "")

    @default("anthropic_api_key")
    def _anthropic_api_key_default(self) -> str:
        return self.from_env("anthropic_api_key", "")

    @default("openai_base_url")
    def _openai_base_url_default(self) -> str:
        return self.from_env("openai_base_url", "")

    @default("openai_api_key")
    def _openai_api_key_default(self) -> str:
        return self.from_env("openai_api_key", "")

    @default("gemini_base_url")
    def _gemini_base_url_default(self) -> str:
        return self.from_env("gemini_base_url", "")

    @default("gemini_api_key")
    def _gemini_api_key_default(self) -> str:
        return self.from_env("gemini_api_key", "")

    @default("credentials")
    def _credentials_default(self) -> dict[str, str]:
        return self.from_env("credentials", {}, lambda _, raw: parse_preferences(raw))

    @default("claude_token_url")
    def _claude_token_url_default(self) -> str:
        return self.from_env("claude_token_url", CLAUDE_TOKEN_URL)

    @default("chatgpt_token_url")
    def _chatgpt_token_url_default(self) -> str:
        return self.from_env("chatgpt_token_url", CHATGPT_TOKEN_URL)

    @default("chatgpt_base_url")
    def _chatgpt_base_url_default(self) -> str:
        return self.from_env("chatgpt_base_url", CHATGPT_BASE_URL)

    @default("sandbox")
    def _sandbox_default(self) -> str:
        return self.from_env("sandbox", "auto")

    @default("egress_ca")
    def _egress_ca_default(self) -> str:
        return self.from_env("egress_ca", "", parse_ca_file)

    @default("egress_resolve")
    def _egress_resolve_default(self) -> dict[str, str]:
        return self.from_env("egress_resolve", {}, parse_resolve_variable)

    @default("prewarm")
    def _prewarm_default(self) -> bool:
        return self.from_env("prewarm", True, parse_bool)

    @default("notebook_tools")
    def _notebook_tools_default(self) -> bool:
        return self.from_env("notebook_tools", True, parse_bool)

    @default("watchdog_s")
    def _watchdog_s_default(self) -> float:
        return self.from_env("watchdog_s", DEFAULT_WATCHDOG_S, seconds_parser(zero_ok=True))

    @default("idle_harness_timeout")
    def _idle_harness_timeout_default(self) -> float:
        return self.from_env(
            "idle_harness_timeout", DEFAULT_IDLE_TIMEOUT_S, seconds_parser(zero_ok=True)
        )

    @default("recycle_after_turns")
    def _recycle_after_turns_default(self) -> int:
        return self.from_env("recycle_after_turns", DEFAULT_RECYCLE_AFTER_TURNS, parse_count)

    @default("recycle_after_mib")
    def _recycle_after_mib_default(self) -> float:
        return self.from_env("recycle_after_mib", DEFAULT_RECYCLE_AFTER_MIB, parse_mib)

    # -- values for the layers below -----------------------------------------------------------

    def login_endpoints(self) -> LoginEndpoints:
        return LoginEndpoints(
            claude_token_url=self.claude_token_url,
            chatgpt_token_url=self.chatgpt_token_url,
            chatgpt_base_url=self.chatgpt_base_url,
        )

    def egress_routes(self) -> EgressRoutes:
        """`egress_resolve` and `egress_ca` for the egress proxy; a value it cannot use is a
        `SettingError` naming the setting (the kernel says it and goes on without it)."""
        try:
            resolve = parse_resolve(self.egress_resolve)
        except RouteError as exc:
            raise SettingError(f"{self.config_name('egress_resolve')}: {exc}") from None
        try:
            ca_file = check_ca_file(self.egress_ca) if self.egress_ca else None
        except RouteError as exc:
            raise SettingError(f"{self.config_name('egress_ca')}: {exc}") from None
        return EgressRoutes(resolve=resolve, ca_file=ca_file)

    def approval_timeout_s(self) -> float:
        """The approval timeout, the default for a configured value of 0 or less."""
        return self.approval_timeout if self.approval_timeout > 0 else DEFAULT_TIMEOUT_S


class SessionFiles(EnvSettings):
    """Where the command line (``omnikernel sessions``, ``export``, ``prune``, ``attach``, whose
    ``--store`` and ``--state-dir`` win over these) and the Jupyter server extension (its session
    API and share server; ``c.SessionFiles.store`` in ``jupyter_server_config.py``) find the
    kernels' sessions. The kernel's own are ``c.OmniKernel.store_path`` and ``state_dir``."""

    store = Unicode(
        help="The session store the command line and the server extension read: the kernels' "
        "(c.OmniKernel.store_path).",
    ).tag(config=True, env=STORE_ENV, default_text="<jupyter data dir>/omnikernel/sessions.sqlite3")
    state_dir = Unicode(
        help="The harness CLIs' private homes, one folder per session (`omnikernel prune` "
        "removes a pruned session's).",
    ).tag(config=True, env=STATE_DIR_ENV, default_text="harness-state beside the store")

    @default("store")
    def _store_default(self) -> str:
        return self.from_env("store", str(default_store_path()))

    @default("state_dir")
    def _state_dir_default(self) -> str:
        return self.from_env("state_dir", str(Path(self.store).parent / "harness-state"))


@dataclasses.dataclass(frozen=True)
class Handoff:
    """A variable one process sets for another: not a setting, but documented with them."""

    variable: str
    set_by: str
    read_by: str
    meaning: str


HANDOFFS = (
    Handoff(
        SESSION_ID_ENV, "you (or a script starting the kernel)", "the kernel, when it starts",
        "Names the session the kernel continues, instead of the notebook's own (see the "
        "README's Sessions). A name that is not a plain session id is ignored, and the first "
        "prompt cell says so.",
    ),
    Handoff(
        NOTEBOOK_ID_ENV, "the server extension (`jupyter_ext.notebooks`)",
        "the kernel, when it starts",
        "The notebook's file id (jupyter-server-fileid's), which follows renames and moves: the "
        "kernel continues the session bound to it.",
    ),
    Handoff(
        JUPYTER_SESSION_ENV, "the server extension (`jupyter_ext.notebooks`)",
        "the kernel, at its start and before its first cell",
        "The Jupyter session the kernel serves; the extension notes its notebook in the store, "
        "since JupyterLab names the notebook only after starting the kernel.",
    ),
    Handoff(
        "OMNIKERNEL_CODEX_KEY", "the kernel, for the Codex CLI it starts",
        "Codex (as its model provider's key)",
        "The session secret the kernel's gateway issued; never a real credential.",
    ),
    Handoff(
        "OMNIKERNEL_PI_KEY", "the kernel, for the pi CLI it starts",
        "pi (as its model provider's key)",
        "The session secret the kernel's gateway issued; never a real credential.",
    ),
    Handoff(
        "OMNIKERNEL_MCP_SERVERS", "the kernel, for the pi CLI it starts",
        "pi's `pi_mcp.ts` extension (Pi has no MCP client of its own)",
        "The HTTP MCP servers Pi gets (the kernel's notebook server with its per-harness "
        "secret, and the user's HTTP servers from mcp.toml), as JSON.",
    ),
)  # fmt: skip
