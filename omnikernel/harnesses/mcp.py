"""MCP servers for the agents: one description, given to each harness in its own format.

An `McpServer` is a stdio server (a command run inside the sandbox, with the agent) or an HTTP
one (a URL). The kernel's own ``notebook`` server is HTTP on a unix socket of the host, reached
from the sandbox through the bridge like the gateway (`socket` names it; the URL's port is the
one the bridge's relay listens on inside), with a per-harness secret as its bearer token.

The user's servers come from ``.omnikernel/mcp.toml`` beside the notebook and the user-level
``<jupyter config dir>/omnikernel/mcp.toml`` (the notebook's wins on a name)::

    [servers.files]                 # stdio: runs inside the sandbox, with the agent
    command = "npx"
    args = ["-y", "@modelcontextprotocol/server-filesystem", "."]
    env = { LOG_LEVEL = "warn" }

    [servers.docs]                  # HTTP: a host, so the sandbox's network policy applies
    url = "https://docs.example.com/mcp"
    headers = { X-Team = "data" }

Formats: Claude Code's ``--mcp-config`` JSON, Codex's ``mcp_servers`` config tables, ACP's
``mcpServers`` in ``session/new``. Pi's CLI has no MCP client: omnikernel's ``pi_mcp.ts``
extension is one, for HTTP servers only (see `omnikernel.harnesses.pi`).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MCP_FILE = "mcp.toml"
#: How long a harness waits for an MCP server to start before its first model call: a stdio
#: server starts inside the sandbox (npx fetching, a cold Python) and a minute is not rare.
STARTUP_TIMEOUT_S = 60
#: The kernel's own server's name: its tools reach the model as ``mcp__notebook__<tool>``.
NOTEBOOK_SERVER = "notebook"


class McpConfigError(ValueError):
    """An mcp.toml does not load; the message names the file and the entry."""


@dataclasses.dataclass(frozen=True)
class McpServer:
    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    url: str = ""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: The host's unix socket the URL's port is bridged to inside the sandbox (ours only).
    socket: Path | None = None

    @property
    def is_http(self) -> bool:
        return bool(self.url)

    @property
    def bridged_port(self) -> int | None:
        """The port the sandbox's bridge must relay to `socket` (None: not bridged)."""
        return urlsplit(self.url).port if self.socket is not None else None


def is_notebook_tool(tool: str) -> bool:
    """Whether a harness's tool name is one of the kernel's notebook server's tools, which
    ask the decision function themselves (so the harness's own ask is answered at once)."""
    return tool.startswith(f"mcp__{NOTEBOOK_SERVER}__") or tool.startswith(f"{NOTEBOOK_SERVER}.")


def claude_config(servers: Iterable[McpServer]) -> dict[str, Any]:
    """Claude Code's ``--mcp-config`` JSON."""
    out: dict[str, Any] = {}
    for s in servers:
        if s.is_http:
            out[s.name] = {"type": "http", "url": s.url, "headers": dict(s.headers)}
        else:
            out[s.name] = {
                "type": "stdio",
                "command": s.command,
                "args": list(s.args),
                "env": dict(s.env),
            }
    return {"mcpServers": out}


def codex_config(servers: Iterable[McpServer]) -> str:
    """Codex's ``[mcp_servers.NAME]`` tables (config.toml), as TOML text."""
    lines: list[str] = []
    for s in servers:
        lines.append(f"\n[mcp_servers.{json.dumps(s.name)}]")
        if s.is_http:
            lines.append(f"url = {json.dumps(s.url)}")
            if s.headers:
                pairs = ", ".join(
                    f"{json.dumps(k)} = {json.dumps(v)}" for k, v in s.headers.items()
                )
                lines.append(f"http_headers = {{ {pairs} }}")
        else:
            lines.append(f"command = {json.dumps(s.command)}")
            lines.append(f"args = {json.dumps(list(s.args))}")
            if s.env:
                pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in s.env.items())
                lines.append(f"env = {{ {pairs} }}")
        lines.append(f"startup_timeout_sec = {STARTUP_TIMEOUT_S}")
    return "\n".join(lines) + "\n"


def acp_servers(servers: Iterable[McpServer], http: bool) -> list[dict[str, Any]]:
    """ACP's ``mcpServers`` for ``session/new``; HTTP servers only if the agent advertised
    ``mcpCapabilities.http`` (`http`)."""
    out: list[dict[str, Any]] = []
    for s in servers:
        if s.is_http:
            if http:
                headers = [{"name": k, "value": v} for k, v in s.headers.items()]
                out.append({"type": "http", "name": s.name, "url": s.url, "headers": headers})
        else:
            env = [{"name": k, "value": v} for k, v in s.env.items()]
            out.append({"name": s.name, "command": s.command, "args": list(s.args), "env": env})
    return out


def _strings(value: Any, what: str) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise McpConfigError(f"{what} must be a table of strings")
    return {str(k): v for k, v in value.items()}


def load_file(path: Path) -> list[McpServer]:
    """The servers of one mcp.toml (none if it is missing); McpConfigError if it is wrong."""
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise McpConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"servers"}
    if unknown:
        raise McpConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; use [servers.NAME]"
        )
    out = []
    for name, entry in (data.get("servers") or {}).items():
        where = f"{path}: servers.{name}"
        if name == NOTEBOOK_SERVER:
            raise McpConfigError(
                f"{where}: the name {NOTEBOOK_SERVER!r} is the kernel's own server"
            )
        if not isinstance(entry, dict):
            raise McpConfigError(f"{where} must be a table")
        extra = set(entry) - {"command", "args", "env", "url", "headers"}
        if extra:
            raise McpConfigError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        command, url = entry.get("command"), entry.get("url")
        if bool(command) == bool(url):
            raise McpConfigError(f"{where}: give either command (stdio) or url (HTTP)")
        args = entry.get("args", [])
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise McpConfigError(f"{where}: args must be a list of strings")
        if url and urlsplit(str(url)).scheme not in ("http", "https"):
            raise McpConfigError(f"{where}: url must be http:// or https://, not {url!r}")
        out.append(
            McpServer(
                name=str(name),
                command=str(command or ""),
                args=tuple(args),
                env=_strings(entry.get("env"), f"{where}.env"),
                url=str(url or ""),
                headers=_strings(entry.get("headers"), f"{where}.headers"),
            )
        )
    return out


def user_mcp_path() -> Path:
    from jupyter_core.paths import jupyter_config_dir

    return Path(jupyter_config_dir()) / "omnikernel" / MCP_FILE


def load_servers(paths: Iterable[Path]) -> list[McpServer]:
    """The servers of every file, a later file's entry replacing an earlier one's name."""
    found: dict[str, McpServer] = {}
    for path in paths:
        for server in load_file(path):
            found[server.name] = server
    return list(found.values())
