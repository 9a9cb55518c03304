"""The kernel's ``notebook`` MCP server: the agent sees the notebook and the live kernel, tries
Python in it with a person's approval, and proposes the next cell.

Built on the `mcp` SDK's `MCPServer` (the protocol's reference implementation: tool schemas from
type hints, the streamable-HTTP transport, protocol-version negotiation with every client), served
by uvicorn on its own thread and loop, so a busy kernel never stalls the transport. The kernel
imports this module when its first prompt starts, not at start-up (the SDK takes ~0.5 s).

Who can reach it, as for the model gateway (`omnikernel.gateway.server`): a unix socket, 0600 in
a fresh 0700 run dir, and no TCP port; a sandboxed agent reaches it at ``127.0.0.1:PORT``, where
its bridge's relay listens inside the sandbox's network namespace (`omnikernel.sandbox.bridge`).
Each harness gets its own secret (`issue_secret`), sent as a bearer token; a request without a
known secret, or from a browser (an ``Origin`` header), gets 401/403 before the SDK sees it.

Every tool call goes through the session's decision function (`Kernel.gate`) before it runs, so
a policy can allow, ask or deny any of them by name (``deny-tool notebook.kernel_run``), and
``kernel_run`` is the ``python`` action, which the built-in ``ask-python`` rule always asks
about. The tools themselves run on the kernel's loop, in the running cell (`notebook_tools`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from omnikernel.harnesses.mcp import NOTEBOOK_SERVER, McpServer
from omnikernel.kernel import notebook_tools
from omnikernel.sandbox.rundir import RunDir

log = logging.getLogger(__name__)

T = TypeVar("T")
SOCKET_NAME = "notebook-mcp.sock"
#: Where a sandboxed agent finds the server (see `omnikernel.gateway.state.INSIDE_PORTS`): a
#: range apart from the gateway's, so that the two bridged ports of one sandbox never meet.
INSIDE_PORTS = range(10000, 20000)

#: Each tool's action kind, as the policy sees it (see `omnikernel.events.ACTIONS`).
TOOL_ACTIONS = {
    "notebook_cells": "read",
    "kernel_variables": "read",
    "kernel_inspect": "read",
    "kernel_run": "python",
    # It changes nothing by itself: the person reads the proposed cell and runs it or not.
    "notebook_insert_cell": "plan",
}


@dataclasses.dataclass(frozen=True)
class Gated:
    """The decision function's answer for one tool call."""

    allow: bool
    reason: str = ""


@dataclasses.dataclass
class Kernel:
    """What the server needs of the kernel (the kernel fills it; tests give their own)."""

    namespace: Callable[[], dict[str, Any]]
    notebook: Callable[[], Path | None]
    running_cell: Callable[[], str]
    folder: Path
    set_next_input: Callable[[str, bool], None]
    #: Runs a coroutine function on the kernel's loop, in the running cell.
    submit: Callable[[Callable[[], Awaitable[Any]]], concurrent.futures.Future[Any]]
    #: The decision function, on the kernel's loop: (harness, tool, action, summary, input).
    gate: Callable[[str, str, str, str, dict[str, Any]], Awaitable[Gated]]


class NotebookServer:
    """See the module docstring."""

    def __init__(self, kernel: Kernel):
        self.kernel = kernel
        self.inside_port = INSIDE_PORTS[secrets.randbelow(len(INSIDE_PORTS))]
        self.socket_path: Path | None = None
        self._secrets: dict[str, str] = {}  # secret -> harness
        self._run: RunDir | None = None
        self._thread: threading.Thread | None = None
        self._uvicorn: Any = None

    # -- who may call --------------------------------------------------------------------------

    def issue_secret(self, harness: str) -> str:
        """A new secret for `harness` (an earlier one for it stops working)."""
        secret = secrets.token_urlsafe(32)
        self._secrets = {s: h for s, h in self._secrets.items() if h != harness}
        self._secrets[secret] = harness
        return secret

    def harness_of(self, authorization: str) -> str | None:
        token = authorization.removeprefix("Bearer ").strip()
        for secret, harness in self._secrets.items():
            if hmac.compare_digest(secret.encode(), token.encode()):
                return harness
        return None

    def server_for(self, harness: str) -> McpServer:
        """The server as `harness` is told of it (a fresh secret for it)."""
        if self.socket_path is None:
            raise RuntimeError("the notebook server is not started")
        return McpServer(
            name=NOTEBOOK_SERVER,
            url=f"http://127.0.0.1:{self.inside_port}/mcp",
            headers={"Authorization": f"Bearer {self.issue_secret(harness)}"},
            socket=self.socket_path,
        )

    # -- the tools -----------------------------------------------------------------------------

    async def _call(self, harness: str, tool: str, args: dict[str, Any], summary: str) -> Any:
        """Ask the decision function, then run the tool on the kernel's loop."""
        kernel = self.kernel

        async def gated() -> Any:
            answer = await kernel.gate(
                harness, f"{NOTEBOOK_SERVER}.{tool}", TOOL_ACTIONS[tool], summary, args
            )
            if not answer.allow:
                return {"denied": answer.reason}
            try:
                return {"ok": self._run_tool(tool, args)}
            except (KeyError, ValueError) as exc:  # a wrong name or argument: the agent reads why
                return {"denied": str(exc.args[0] if exc.args else exc)}

        outcome = await asyncio.wrap_future(kernel.submit(gated))
        if "denied" in outcome:
            raise ToolError(outcome["denied"] or f"{tool} was denied")
        return outcome["ok"]

    def _run_tool(self, tool: str, args: dict[str, Any]) -> Any:
        kernel = self.kernel
        if tool == "notebook_cells":
            return notebook_tools.cells(kernel.notebook(), kernel.running_cell())
        if tool == "kernel_variables":
            # An object, not a bare list: Gemini CLI reads a tool's JSON text as its
            # structuredContent, which MCP requires to be an object (a list fails the call).
            return {"variables": notebook_tools.variables(kernel.namespace())}
        if tool == "kernel_inspect":
            return notebook_tools.inspect_value(args["name"], kernel.namespace(), kernel.folder)
        if tool == "kernel_run":
            return notebook_tools.run(args["code"], kernel.namespace())
        if tool == "notebook_insert_cell":
            return notebook_tools.insert_cell(
                args["source"], args.get("type", "code"), kernel.set_next_input
            )
        raise KeyError(tool)

    def app(self) -> Any:
        """The ASGI app: the SDK's streamable-HTTP app behind the secret check."""
        mcp: Any = MCPServer(
            NOTEBOOK_SERVER,
            instructions=(
                "Tools into the user's live Jupyter notebook and kernel. The open notebook file "
                "is read-only for you: propose cells with notebook_insert_cell. kernel_run "
                "runs Python in the user's kernel only after the user approves it."
            ),
            log_level="WARNING",
        )
        server = self

        def harness(ctx: Any) -> str:
            headers = ctx.headers or {}
            return server.harness_of(str(headers.get("authorization", ""))) or "?"

        def text(value: Any) -> str:
            return value if isinstance(value, str) else json.dumps(value, indent=1, default=str)

        @mcp.tool(structured_output=False)
        async def notebook_cells(ctx: Context) -> str:
            """The notebook's cells (source, type, execution count, outputs as text) as last
            saved; the cell running your turn is marked "running"."""
            return text(
                await server._call(harness(ctx), "notebook_cells", {}, "the notebook's cells")
            )

        @mcp.tool(structured_output=False)
        async def kernel_variables(ctx: Context) -> str:
            """The user's variables in the live kernel: name, type, shape or length, size in
            bytes. No values: use kernel_inspect for one."""
            return text(
                await server._call(harness(ctx), "kernel_variables", {}, "the kernel's variables")
            )

        @mcp.tool(structured_output=False)
        async def kernel_inspect(name: str, ctx: Context) -> str:
            """A summary of one variable of the live kernel: a DataFrame's shape, dtypes, head
            and describe() (the whole frame is written to agent-data/ for you to read), an
            array's shape, dtype and stats, else its repr (cut at a few kB)."""
            return text(await server._call(harness(ctx), "kernel_inspect", {"name": name}, name))

        @mcp.tool(structured_output=False)
        async def kernel_run(code: str, ctx: Context) -> str:
            """Run Python in the user's live kernel (outside your sandbox; the user approves
            each call). Returns stdout, stderr, the last expression's repr and any error."""
            return text(await server._call(harness(ctx), "kernel_run", {"code": code}, code))

        @mcp.tool(structured_output=False)
        async def notebook_insert_cell(source: str, ctx: Context, type: str = "code") -> str:
            """Propose a new cell below the running one (type "code" for Python, or
            "markdown"); the user reads it and runs it. Nothing runs by itself."""
            return text(
                await server._call(
                    harness(ctx),
                    "notebook_insert_cell",
                    {"source": source, "type": type},
                    source,
                )
            )

        inner = mcp.streamable_http_app(stateless_http=True, json_response=True)

        async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
                }
                status = (
                    403
                    if "origin" in headers
                    else 401
                    if server.harness_of(headers.get("authorization", "")) is None
                    else 0
                )
                if status:
                    body = (
                        b"browsers may not call this server" if status == 403 else b"unauthorized"
                    )
                    await send(
                        {
                            "type": "http.response.start",
                            "status": status,
                            "headers": [(b"content-type", b"text/plain")],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
                    return
            await inner(scope, receive, send)

        return guarded

    # -- serving -------------------------------------------------------------------------------

    def start_in_thread(self) -> NotebookServer:
        """Serve the unix socket from a thread of its own; returns once it listens."""
        import uvicorn

        run = RunDir.create()
        path = run.path / SOCKET_NAME
        config = uvicorn.Config(
            self.app(), uds=str(path), log_level="warning", lifespan="on", access_log=False
        )
        self._uvicorn = server = uvicorn.Server(config)
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                asyncio.run(server.serve())
            except BaseException as exc:  # reported to the starter below
                failure.append(exc)

        self._thread = threading.Thread(target=serve, name="omnikernel-notebook-mcp", daemon=True)
        self._thread.start()
        for _ in range(3000):
            if server.started or failure or not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not server.started:
            run.remove()
            raise RuntimeError(f"the notebook MCP server did not start: {failure or 'timeout'}")
        path.chmod(0o600)
        self._run, self.socket_path = run, path
        return self

    def stop_thread(self) -> None:
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._run is not None:
            with contextlib.suppress(OSError):
                self._run.remove()
        self._thread = self._uvicorn = self._run = self.socket_path = None
