"""OmniKernel: the "Omnigent" Jupyter kernel. A cell is a prompt to the selected agent harness.

An `IPythonKernel` subclass, so comms, widgets, `display()` and Python cells keep working:
`%`/`!` cells and `%%python` cells go to IPython unchanged, and everything else is a prompt
(see `routing`). A prompt runs as an asyncio task the kernel awaits, which keeps the shell
responsive to comm messages (widget clicks) while the agent works, and turns the stop button
(SIGINT) into a cancellation that ends the agent's turn and leaves the kernel usable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import re
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipykernel.ipkernel import IPythonKernel
from IPython.display import display, update_display

from omnikernel import __version__
from omnikernel.approvals.from_share import watch_answers
from omnikernel.events import Event, EventKind
from omnikernel.gateway.credentials import check_preferences
from omnikernel.gateway.upstream import UpstreamConfig
from omnikernel.harnesses import HarnessError
from omnikernel.harnesses.acp import AcpAgent
from omnikernel.kernel.agent_result import result_from_events, snapshot
from omnikernel.kernel.codrive import CoDriving
from omnikernel.kernel.hub import current_user
from omnikernel.kernel.interpolate import ValueWriter, describe_substitutions, interpolate
from omnikernel.kernel.magics import FAMILIES
from omnikernel.kernel.magics.common import MAGICS_HELP, parse_agent_args
from omnikernel.kernel.magics.session import first_cell_notice
from omnikernel.kernel.magics.share import ShareMagics
from omnikernel.kernel.routing import Route, route
from omnikernel.kernel.settings import KernelSettings, SettingError
from omnikernel.policy import hosts
from omnikernel.sandbox.host_credentials import parse_broker
from omnikernel.sandbox.upstream import EgressRoutes
from omnikernel.session import identity
from omnikernel.session.core import AgentSession, continuing_notice
from omnikernel.store.redact import LogFilter
from omnikernel.store.sessions import SessionStore, StoreUnavailableError
from omnikernel.view.render import CellView, error_bundle, notice_bundle
from omnikernel.view.sanitize import SessionImages

if TYPE_CHECKING:
    from omnikernel.harnesses.mcp import McpServer
    from omnikernel.kernel.notebook_server import Gated, NotebookServer
    from omnikernel.kernel.widgets import SessionFeed
    from omnikernel.store.shares import SharedPrompt

#: When the deferred imports load if no frontend asked for kernel_info by then (seconds).
PREWARM_FALLBACK_S = 2.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def last_error_text(source: str, reply: dict[str, Any]) -> str:
    """What ``{Err}`` and `%fix` send: the failed cell's source and its traceback (no colours)."""
    frames = reply.get("traceback") or [f"{reply.get('ename')}: {reply.get('evalue')}"]
    traceback = _ANSI.sub("", "\n".join(frames)).strip()
    return f"The cell:\n```python\n{source.strip()}\n```\nIts traceback:\n```\n{traceback}\n```"


@dataclasses.dataclass
class ShownTurn:
    """How a shown turn went (see `OmniKernel._show_turn`)."""

    started: Event | None = None  # its ``turn_start``: None if it never started
    status: str = "completed"  # its ``turn_end``'s status, "interrupted" when stopped
    stopped: bool = False  # the stop button ended it (or ended the wait for it)
    store_error: StoreUnavailableError | None = None


class OmniKernel(KernelSettings, IPythonKernel):
    implementation = "omnikernel"
    implementation_version = __version__
    banner = (
        f"Omnigent kernel {__version__}: a cell is a prompt to a coding agent. "
        "%agent shows or switches the harness, %agents lists them, %%python runs Python."
    )
    language_info = {
        "name": "markdown",
        "mimetype": "text/markdown",
        "file_extension": ".md",
        "codemirror_mode": "markdown",
        "pygments_lexer": "markdown",
    }

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.store = SessionStore(self.store_path)
        problem = " ".join(self.env_problems()) + " " * bool(self.setting_problems)
        self._identity_env: dict[str, str] = dict(os.environ)
        try:
            who = identity.resolve(self._identity_env, Path.cwd(), self.store)
        except identity.SessionNameError as exc:  # a bad OMNIKERNEL_SESSION_ID: say so, go on
            problem += f"{identity.SESSION_ID_ENV} is ignored: {exc}. "
            self._identity_env.pop(identity.SESSION_ID_ENV)
            who = identity.resolve(self._identity_env, Path.cwd(), self.store)
        #: JupyterLab names the notebook only after starting its kernel: look again at the
        #: first cell (see `omnikernel.session.identity`).
        self._identity_pending = who.per_run and identity.JUPYTER_SESSION_ENV in os.environ
        credentials = dict(self.credentials)
        try:
            check_preferences(credentials)
        except ValueError as exc:
            problem += f"{exc} It is ignored (auto is used). "
            credentials = {}
        allow_hosts = []
        for pattern in self.sandbox_allow:
            try:
                allow_hosts.append(hosts.check(pattern))
            except hosts.HostPatternError as exc:  # say so, go on without it
                problem += f"c.OmniKernel.sandbox_allow: {exc}; it is ignored. "
        try:
            egress_routes = self.egress_routes()
        except SettingError as exc:  # a config file's value: say so, go on without it
            problem += f"{exc} It is ignored. "
            egress_routes = EgressRoutes()
        try:
            broker_hosts = parse_broker(self.sandbox_broker)
        except ValueError as exc:
            problem += f"sandbox_broker: {exc} It is ignored. "
            broker_hosts = {}
        upstreams = UpstreamConfig(
            anthropic_base_url=self.anthropic_base_url,
            anthropic_api_key=self.anthropic_api_key,
            openai_base_url=self.openai_base_url,
            openai_api_key=self.openai_api_key,
            gemini_base_url=self.gemini_base_url,
            gemini_api_key=self.gemini_api_key,
        ).merged_with_env(os.environ)
        self.agents = AgentSession(
            store=self.store,
            session_id=who.session_id,
            notebook=who.notebook,
            notebook_id=who.notebook_id,
            how=who.how,
            cwd=Path.cwd(),
            state_dir=Path(self.state_dir),
            upstream_config=upstreams,
            harness=self.default_harness,
            model=self.default_model or None,
            harness_paths=self.harness_paths,
            auto_approve=self.auto_approve,
            rehearsal_scenario=self.rehearsal_scenario,
            budget_usd=self.budget_usd,
            budget_tokens=self.budget_tokens,
            sandbox=self.sandbox,
            allow_hosts=tuple(allow_hosts),
            broker_hosts=broker_hosts,
            egress_routes=egress_routes,
            readable=tuple(Path(os.path.expanduser(p)).resolve() for p in self.sandbox_readable),
            acp_agents={n: AcpAgent.from_config(v) for n, v in self.acp_agents.items()},
            price_overrides=self.prices,
            approval_timeout_s=self.approval_timeout_s(),
            credentials=credentials,
            login_env=os.environ,
            login_endpoints=self.login_endpoints(),
            watchdog_s=self.watchdog_s,
            idle_timeout_s=self.idle_harness_timeout,
            recycle_after_turns=self.recycle_after_turns,
            recycle_after_mib=self.recycle_after_mib,
        )
        # Images the agents write into the notebook's folder from now on may be shown inline;
        # no other image an answer names is ever loaded (see `sanitize`).
        self.images = SessionImages(Path.cwd())
        #: The last Python error (``{Err}`` and `%fix` send it): its cell's source and traceback.
        self.last_error: str | None = None
        #: One turn at a time in this kernel, whether a cell or a co-driver asked for it.
        self.turns = asyncio.Lock()
        #: Where approval cards show: the running cell, or the session feed during a
        #: co-driver's turn.
        self._show = display
        self.agents.approvals.presenters.append(self._present_card)
        self._card_presenter: Any = None
        self.agents.after_restart.show_turn = self._carry_out
        self.agents.after_restart.say = lambda message: display(
            notice_bundle({"message": message}), raw=True
        )
        share = ShareMagics(self.shell, self.agents, show_feed=self._show_feed)
        self.codriving = CoDriving(
            codes=lambda: share.codes,
            session_id=lambda: self.agents.session_id,
            run=self._run_shared_prompt,
            busy=self.turns.locked,
        )
        self.agents.approvals.presenters.append(
            watch_answers(
                self.agents.approvals, lambda: share.codes, lambda: self.agents.session_id
            )
        )
        assert self.shell is not None
        notice = " ".join(CONFIG_PROBLEMS) + " " * bool(CONFIG_PROBLEMS) + problem
        notice += first_cell_notice(who) or ""
        if (last := self.agents.continue_last_harness()) is not None:
            notice += continuing_notice(last)
        self.agents.first_notice = notice or None
        self._deferred_loaded = False
        self._prewarm_pending = self.prewarm
        #: The ``notebook`` MCP server, started with the first CLI that gets it.
        self._notebook_server: NotebookServer | None = None
        self._notebook_server_lock = threading.Lock()
        #: Cells the agents proposed during the running prompt (sent with its reply).
        self._proposed: list[str] = []
        if self.notebook_tools:
            self.agents.notebook_mcp = self._notebook_mcp_for
        for family in FAMILIES:
            self.shell.register_magics(family(self.shell, self.agents))
        self.shell.register_magics(share)
        # Our log lines go to the kernel's log (the server's terminal), never into a cell; no
        # line there carries a credential the session knows (a CLI's stderr, a stray line).
        ours = logging.getLogger("omnikernel")
        ours.handlers = list(self.log.handlers) if isinstance(self.log, logging.Logger) else []
        ours.propagate = False
        for handler in ours.handlers:
            handler.addFilter(LogFilter(self.agents.redactor))

    def _present_card(self, pending: Any) -> None:
        """Shows an ask as an approval card; ipywidgets (about 0.4 s to import) loads at the
        first ask or once the kernel is idle (`_load_deferred`), not while the kernel starts."""
        if self._card_presenter is None:
            from omnikernel.kernel.widgets import presenter

            self._card_presenter = presenter(
                self.agents.approvals, lambda *a, **k: self._show(*a, **k)
            )
        self._card_presenter(pending)

    # -- the notebook MCP server ---------------------------------------------------------------

    def _notebook_mcp_for(self, harness: str) -> McpServer:
        """The notebook server as `harness` is told of it, started at the first ask (its SDK
        is imported only then), from the thread the CLI's start reads its MCP servers in."""
        with self._notebook_server_lock:  # CLIs start it from worker threads
            return self._notebook_server_for(harness)

    def _notebook_server_for(self, harness: str) -> McpServer:
        if self._notebook_server is None:
            from omnikernel.kernel.notebook_server import Kernel, NotebookServer

            assert self.shell is not None
            shell = self.shell
            self._notebook_server = NotebookServer(
                Kernel(
                    namespace=lambda: shell.user_ns,
                    notebook=self.agents.notebook_path,
                    running_cell=lambda: self.agents.running_cell,
                    folder=self.agents.cwd,
                    set_next_input=lambda text, replace: self._proposed.append(text),
                    submit=self._on_kernel_loop,
                    gate=self._gate_tool,
                )
            ).start_in_thread()
        return self._notebook_server.server_for(harness)

    def _on_kernel_loop(self, work: Callable[[], Awaitable[Any]]) -> concurrent.futures.Future[Any]:
        """Run `work` on the loop running the turn, in its cell (so a card shows there)."""
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        loop, context = self.agents.turn_loop()
        if loop is None:
            done.set_exception(RuntimeError("no agent turn is running in this kernel"))
            return done

        def start() -> None:
            task = asyncio.ensure_future(work())

            def finish(t: asyncio.Future[Any]) -> None:
                if t.cancelled():
                    done.cancel()
                elif (exc := t.exception()) is not None:
                    done.set_exception(exc)
                else:
                    done.set_result(t.result())

            task.add_done_callback(finish)

        loop.call_soon_threadsafe(start, context=context)
        return done

    async def _gate_tool(
        self, harness: str, tool: str, action: str, summary: str, tool_input: dict[str, Any]
    ) -> Gated:
        from omnikernel.kernel.notebook_server import Gated

        decision = await self.agents.decide_tool(harness, tool, action, summary, tool_input)
        return Gated(decision.allow, decision.reason)

    def _proposed_cells(self) -> list[dict[str, Any]]:
        """The ``set_next_input`` payloads of the cells proposed during this prompt: JupyterLab
        and Notebook 7 put each below the running cell, for the person to run."""
        proposed, self._proposed = self._proposed, []
        return [{"source": "set_next_input", "text": t, "replace": False} for t in proposed]

    # -- execution -----------------------------------------------------------------------------

    async def do_execute(  # type: ignore[override]
        self,
        code: str,
        silent: bool,
        store_history: bool = True,
        user_expressions: dict[str, Any] | None = None,
        allow_stdin: bool = False,
        *,
        cell_meta: dict[str, Any] | None = None,
        cell_id: str | None = None,
    ) -> dict[str, Any]:
        if self._identity_pending:
            self._identity_pending = False
            who = identity.resolve(self._identity_env, Path.cwd(), self.store)
            if not who.per_run:
                self.agents.adopt(who)
        cell = route(code)
        if (
            cell.kind == "ipython"
            and cell.magic == "fix"
            and not cell.body.lstrip().startswith("%%")
        ):
            return await self._fix(cell, cell_id)
        if cell.kind == "ipython":
            if unknown := self._unknown_magic(cell):
                return unknown
            reply = await super().do_execute(
                cell.body,
                silent,
                store_history,
                user_expressions,
                allow_stdin,
                cell_meta=cell_meta,
                cell_id=cell_id,
            )
            if reply.get("status") == "error" and reply.get("ename") != "KeyboardInterrupt":
                self.last_error = last_error_text(cell.body, reply)
            return reply
        return await self._execute_prompt(cell, cell_id)

    async def _fix(self, cell: Route, cell_id: str | None) -> dict[str, Any]:
        """`%fix [NOTE]`: the last Python error and its cell's source, to the current agent."""
        note = cell.body.strip().partition(" ")[2].strip()
        if self.last_error is None:
            return self._error_reply(
                "UsageError", "%fix: no Python cell has failed in this kernel yet."
            )
        prompt = (
            "A Python cell of my notebook failed. Find the cause and fix it (in the files it "
            "uses, or tell me the corrected cell).\n\n" + self.last_error
        )
        if note:
            prompt += f"\n\n{note}"
        return await self._execute_prompt(Route("prompt", prompt), cell_id, interpolated=True)

    def _unknown_magic(self, cell: Route) -> dict[str, Any] | None:
        """A clear error for a magic that does not exist (IPython's says less)."""
        if not cell.magic or cell.magic == "python":
            return None
        assert self.shell is not None
        is_cell_magic = cell.body.lstrip().startswith("%%")
        found = (
            self.shell.find_cell_magic(cell.magic)
            if is_cell_magic
            else self.shell.find_line_magic(cell.magic)
        )
        if found:
            return None
        prefix = "%%" if is_cell_magic else "%"
        return self._error_reply("UsageError", f"Unknown magic {prefix}{cell.magic}. {MAGICS_HELP}")

    def _error_reply(self, ename: str, message: str, hint: str = "") -> dict[str, Any]:
        message, hint = self.agents.redactor.text(message), self.agents.redactor.text(hint)
        display(error_bundle({"message": message, "hint": hint}), raw=True)
        assert self.shell is not None
        count = self.shell.execution_count
        self.shell.execution_count += 1
        return {
            "status": "error",
            "execution_count": count,
            "ename": ename,
            "evalue": message,
            "traceback": [],
        }

    async def _execute_prompt(
        self, cell: Route, cell_id: str | None, interpolated: bool = False
    ) -> dict[str, Any]:
        session = self.agents
        harness = out = None
        prompt, handoff = cell.body, True
        if not interpolated:
            prompt = self._interpolate(prompt)
        if cell.agent_args is not None:
            try:
                args = parse_agent_args(cell.agent_args, allow_review=True)
            except Exception as exc:  # UsageError: show it, keep the kernel going
                return self._error_reply("UsageError", str(exc))
            if args.name is None:
                return self._error_reply("UsageError", "Usage: %%agent NAME [--model M] [--review]")
            harness, out = args.name, args.out
            try:
                session.set_model(harness, args.model)
                if args.review:
                    prompt, _ = session.review_prompt(harness, prompt)
                    handoff = False  # the review prompt carries the turn itself
            except (HarnessError, LookupError) as exc:
                return self._error_reply("UsageError", str(exc))
        if not prompt:
            return self._error_reply(
                "UsageError", "The cell has no prompt: write what the agent should do."
            )
        name = harness or session.current
        view = CellView(
            display,
            update_display,
            offline=session.is_offline(name),
            images=self.images,
            # A request without a cell id comes from a front end without cells (jupyter
            # console, a script's client), which cannot update a display in place.
            stream=None if cell_id else self._write_stdout,
            schedule=asyncio.get_running_loop().call_later,
        )
        before = await asyncio.to_thread(snapshot, session.cwd)

        def waiting(message: str) -> None:
            view.flush_text()
            display(notice_bundle({"message": message}), raw=True)

        async def turn() -> AsyncIterator[Event]:
            if self.turns.locked():
                display(
                    notice_bundle(
                        {
                            "message": "A co-driver's prompt from the share page runs "
                            "as a turn of this session now; this cell waits for it to end (its "
                            "Stop button is in the session feed)."
                        }
                    ),
                    raw=True,
                )
            async with self.turns:
                async for event in session.run_prompt(
                    prompt, harness=name, cell=cell_id or "", handoff=handoff, on_wait=waiting
                ):
                    yield event

        shown = await self._show_turn(turn(), view, name, cell_id or "")
        if shown.store_error is not None:  # nothing more can be stored: the turn was ended
            return self._error_reply("StoreUnavailableError", str(shown.store_error))
        if shown.stopped and shown.started is None:  # stopped while waiting for another turn
            display(
                notice_bundle(
                    {"message": "Stopped waiting: this prompt was not sent to the agent."}
                ),
                raw=True,
            )
        status = shown.status
        started = [(e.session_id, e.turn) for e in (shown.started,) if e is not None]
        if started:
            await self._publish_result(started[0], before, out)
        assert self.shell is not None
        count = self.shell.execution_count
        # Prompts join IPython's input history, so a console's up-arrow finds them too.
        self.shell.history_manager.store_inputs(count, cell.body)
        self.shell.execution_count += 1
        payload = self._proposed_cells()
        if status == "completed":
            return {
                "status": "ok",
                "execution_count": count,
                "payload": payload,
                "user_expressions": {},
            }
        ename = "KeyboardInterrupt" if status == "interrupted" else "AgentError"
        return {
            "status": "error",
            "execution_count": count,
            "ename": ename,
            "evalue": f"the {name} turn ended: {status}",
            "traceback": [],
        }

    # -- co-drivers ------------------------------------------------------------------------------

    def _show_feed(self) -> None:
        """`%share`: the session feed in this cell; co-drivers' prompts run from now on."""
        from omnikernel.kernel.widgets import SessionFeed, widget_bundle

        feed = SessionFeed()
        display(
            widget_bundle(
                feed,
                "Session feed: co-drivers' prompts from the share page "
                "run here (shown where widgets render).",
            ),
            raw=True,
        )
        self.codriving.show(feed)

    async def _run_shared_prompt(self, prompt: SharedPrompt, feed: SessionFeed) -> None:
        """A co-driver's prompt as a turn of this session, shown in `feed`: never through
        IPython, never interpolated (see `omnikernel.kernel.codrive`)."""
        session = self.agents
        name = session.current
        view = CellView(
            feed.display,
            feed.update_display,
            offline=session.is_offline(name),
            images=self.images,
            schedule=asyncio.get_running_loop().call_later,
        )
        # Whose prompt it is, apart from whose credentials and budget run it.
        origin = {"by": prompt.who, "source": prompt.source, "runs_as": current_user()}

        def waiting(message: str) -> None:  # another kernel of the session runs a turn
            feed.display(notice_bundle({"message": message}))

        async with self.turns:
            self._show = feed.display
            try:
                shown = await self._show_turn(
                    session.run_prompt(prompt.text, harness=name, origin=origin, on_wait=waiting),
                    view,
                    name,
                    "",
                    on_task=lambda task: feed.running(prompt, on_stop=task.cancel),
                )
                if shown.store_error is not None:
                    feed.display(error_bundle({"message": str(shown.store_error)}))
            finally:
                self._show = display
                feed.idle()

    async def _carry_out(self, events: AsyncIterator[Event]) -> None:
        """Show a turn the kernel runs by itself (an approval answered after a restart carries
        it out) in the cell it belongs to: the caller runs in that cell's context. The stop
        button ends it, as it ends a cell's."""
        view = CellView(
            display,
            update_display,
            images=self.images,
            schedule=asyncio.get_running_loop().call_later,
        )
        shown = await self._show_turn(events, view, None, None)
        if shown.store_error is not None:
            raise shown.store_error

    async def _show_turn(
        self,
        events: AsyncIterator[Event],
        view: CellView,
        harness: str | None,
        cell: str | None,
        on_task: Callable[[asyncio.Task[None]], None] | None = None,
    ) -> ShownTurn:
        """Show a turn's events (as `AgentSession.run_prompt` yields them) in `view` until it
        ends or the stop button ends it: the one way a cell's prompt, a co-driver's and an
        approval carried out after a restart are shown. Stopped, the turn's end is stored and
        shown; a store that refuses writes ends the turn (`ShownTurn.store_error`). `harness`
        and `cell` name the turn before it starts (None: the turn's own, once started)."""
        shown = ShownTurn()

        async def show() -> None:
            async for event in events:
                if event.kind == EventKind.TURN_START and shown.started is None:
                    shown.started = event
                view.show(event)
                if event.kind == EventKind.TURN_END:
                    shown.status = event.data.get("status", "completed")

        task = asyncio.ensure_future(show())
        if on_task is not None:
            on_task(task)
        try:
            await self._until_done_or_stopped(task)
        except StoreUnavailableError as exc:
            view.flush_text()
            await self.agents.abandon_turn(harness or (shown.started and shown.started.harness))
            shown.store_error = exc
            return shown
        except BaseException:
            view.flush_text()  # what the view still holds shows here, not after the cell
            raise
        if task.cancelled():
            shown.stopped, shown.status = True, "interrupted"
            view.flush_text()
            if shown.started is not None:
                started = shown.started
                for event in await self.agents.stop_turn(
                    harness or started.harness, cell if cell is not None else started.cell
                ):
                    view.show(event)
        return shown

    def _interpolate(self, prompt: str) -> str:
        """Python values named in the prompt, put in (see `omnikernel.kernel.interpolate`); the cell
        says what was put in."""
        assert self.shell is not None
        namespace: dict[str, Any] = dict(self.shell.user_ns)
        if self.last_error is not None:
            namespace["Err"] = self.last_error
        text, subs = interpolate(prompt, namespace, ValueWriter(self.agents.cwd))
        if subs:
            display(
                notice_bundle(
                    {
                        "message": "Python values in this prompt:\n"
                        + describe_substitutions(subs).replace("\n", "  \n")
                    }
                ),
                raw=True,
            )
        return text

    async def _publish_result(
        self, turn: tuple[str, int], before: dict[str, tuple[int, int]], out: str | None
    ) -> None:
        """`_agent` (and `out`, if asked) in the user namespace: the turn as a Python value."""
        session_id, number = turn
        after = await asyncio.to_thread(snapshot, self.agents.cwd)
        result = result_from_events(
            self.store.events(session_id, turn=number),
            folder=self.agents.cwd,
            before=before,
            after=after,
        )
        assert self.shell is not None
        self.shell.user_ns["_agent"] = result
        if out:
            self.shell.user_ns[out] = result.text

    def _write_stdout(self, text: str) -> None:
        """A ``stream`` message, sent at once under the parent the displays use: ipykernel's
        buffered `sys.stdout` flushes from its own thread, which could order a chunk after
        the next display."""
        assert self.shell is not None
        self.session.send(
            self.iopub_socket,
            "stream",
            {"name": "stdout", "text": text},
            parent=self.shell.display_pub.parent_header,
            ident=self._topic("stream"),
        )

    async def _until_done_or_stopped(self, task: asyncio.Future[Any]) -> None:
        """Wait for a turn's task; the stop button (SIGINT) cancels it, and that cancel ends
        here (the caller sees `task.cancelled()`). The kernel itself being stopped, and any
        other error of the task, go on to the caller."""
        on_main_thread = threading.current_thread() is threading.main_thread()
        guard = self._stop_on_sigint if on_main_thread else self._dummy_context_manager
        with guard(task):
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the kernel itself is being stopped, not just this turn

    @contextlib.contextmanager
    def _stop_on_sigint(self, task: asyncio.Future[Any]) -> Iterator[None]:
        """Cancel the running prompt on SIGINT (the stop button) at once. ipykernel's own guard
        hands the signal to its io_loop, which here is not the loop running the turn: that
        loop only noticed seconds later, at its next wake-up. This wakes the turn's own loop."""
        loop = asyncio.get_running_loop()

        def on_sigint(signum: int, frame: Any) -> None:
            loop.call_soon_threadsafe(task.cancel)

        saved = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, saved)

    def do_complete(self, code: str, cursor_pos: int | None) -> Any:
        """Python completion inside ``%%python`` cells and on ``%``/``!`` lines; a prompt
        cell completes nothing (it is prose for the agent)."""
        cursor_pos = len(code) if cursor_pos is None else cursor_pos
        cell = route(code)
        if cell.kind == "prompt":
            return {
                "status": "ok",
                "matches": [],
                "cursor_start": cursor_pos,
                "cursor_end": cursor_pos,
                "metadata": {},
            }
        offset = len(code) - len(cell.body) if cell.magic == "python" else 0
        if cursor_pos < offset:
            offset = 0
        reply = super().do_complete(code[offset:], cursor_pos - offset)
        if isinstance(reply, dict) and offset:
            reply["cursor_start"] += offset
            reply["cursor_end"] += offset
        return reply

    def do_is_complete(self, code: str) -> dict[str, Any]:
        """A prompt is always complete (consoles send it on Enter); Python is asked of IPython."""
        cell = route(code)
        if cell.kind == "prompt":
            return {"status": "complete"}
        return super().do_is_complete(cell.body)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        super().start()
        # The CLI starts with the kernel (it runs in its own processes; the loop only spawns
        # it), so it has the time until a person's first prompt to come up.
        self.io_loop.add_callback(self._prewarm_once)
        # A frontend asks for kernel_info as soon as it connects; without one, load anyway.
        self.io_loop.call_later(PREWARM_FALLBACK_S, self._load_deferred_once)

    async def kernel_info_request(self, stream: Any, ident: Any, parent: Any) -> None:
        await super().kernel_info_request(stream, ident, parent)
        # Replied first, so the kernel is ready before the deferred imports run; may run on the
        # control thread: they are loaded on the shell's loop.
        self.io_loop.add_callback(self._load_deferred_once)

    def _prewarm_once(self) -> None:
        if self._prewarm_pending:
            self._prewarm_pending = False
            self.agents.prewarm()

    def _load_deferred_once(self) -> None:
        if not self._deferred_loaded:
            self._deferred_loaded = True
            # After the CLI's start is under way (it runs in its own process meanwhile).
            self.io_loop.call_later(0.05, _load_deferred)

    async def do_shutdown(self, restart: bool) -> dict[str, Any]:  # type: ignore[override]
        # Runs on the control thread's event loop, not the shell's that owns the harness
        # processes: stop them with signals, which work from any thread.
        self.codriving.close()
        self.agents.kill_now()
        if self._notebook_server is not None:
            self._notebook_server.stop_thread()
        return super().do_shutdown(restart)


def _load_deferred() -> None:
    """Import, once the kernel is idle, what its start leaves out and the first turn or ask
    needs (widgets, Markdown rendering, the price data, the gateway's HTTP client), so neither
    pays for it."""
    from omnikernel.kernel import widgets  # noqa: F401  (ipywidgets registers its comm target on import)
    from omnikernel.view.sanitize import _parser

    _parser()
    with contextlib.suppress(Exception):  # the gateway meters the first call with it
        from genai_prices import data_snapshot

        data_snapshot.get_snapshot()
    import aiohttp  # noqa: F401  (the gateway streams the first call's answer with it)


#: Config files the kernel app could not load (see `kernelapp`), said in the first prompt cell.
CONFIG_PROBLEMS: list[str] = []
