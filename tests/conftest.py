"""Shared fixtures: a real Omnigent kernel on a real fake-model server, in a temporary folder.

Everything runs against real parts: the installed kernelspec, the real `claude` CLI from npm and
a scripted model server on 127.0.0.1. Tests that need a tool the machine lacks fail with the
command that installs it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import queue
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

REPO = Path(__file__).resolve().parent.parent
NODE_BIN = REPO / ".tools" / "node_modules" / ".bin"
# `make test` puts the pinned CLIs first on PATH; do the same when pytest runs on its own.
os.environ["PATH"] = f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"

#: Model credentials the tests must not inherit from the machine.
UPSTREAM_VARS = (
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
)


def require_cli(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"the `{name}` CLI is not installed; install it with: make harness-clis")
    return path


def require_claude() -> str:
    return require_cli("claude")


def kernel_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a kernel: private store and state, no inherited credentials."""
    env = {k: v for k, v in os.environ.items() if k not in UPSTREAM_VARS}
    env.pop("OMNIKERNEL_AUTO_APPROVE", None)
    env.pop("JPY_SESSION_NAME", None)
    env["OMNIKERNEL_STORE"] = str(tmp / "store" / "sessions.sqlite3")
    env["OMNIKERNEL_STATE_DIR"] = str(tmp / "state")
    # Nor the machine's plan logins: a test that wants one puts it here.
    for var in ("CLAUDE_CODE_OAUTH_TOKEN", "OMNIKERNEL_CREDENTIALS"):
        env.pop(var, None)
    env["CLAUDE_CONFIG_DIR"] = str(tmp / "host-claude")
    env["CODEX_HOME"] = str(tmp / "host-codex")
    env.update(extra)
    return env


def shown_text(msg: dict[str, Any]) -> str:
    """The plain text one output message shows: a display's, or a stream chunk's (a client
    without cells, like this one, gets the agent's text as a stream)."""
    content = msg["content"]
    return content.get("data", {}).get("text/plain", "") + content.get("text", "")


@dataclass
class CellResult:
    reply: dict[str, Any]
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return self.reply["status"]

    @property
    def text(self) -> str:
        """All plain text the cell showed, in order (streams, displays, updates, errors)."""
        parts = []
        streaming = False  # consecutive stream chunks are one text (a console's answer)
        for msg in self.outputs:
            content = msg["content"]
            was_streaming, streaming = streaming, msg["msg_type"] == "stream"
            if streaming and was_streaming:
                parts[-1] += content["text"]
            elif streaming:
                parts.append(content["text"])
            elif msg["msg_type"] in ("display_data", "update_display_data", "execute_result"):
                parts.append(content["data"].get("text/plain", ""))
            elif msg["msg_type"] == "error":
                parts.append(f"{content['ename']}: {content['evalue']}")
        return "\n".join(parts)


class KernelSession:
    """A started kernel and a blocking client, with a helper to run one cell."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.cwd = cwd
        # jupyter_client picks the kernel's five ports by binding port 0 and letting go: with
        # several workers starting kernels and servers, another process can take one before
        # the kernel binds it ("Address already in use"), and the kernel dies at its start.
        # A kernel that dies before its first reply is started again on new ports (twice).
        for attempt in range(3):
            self.km = KernelManager(kernel_name="omnikernel")
            self.km.start_kernel(cwd=str(cwd), env=env)
            self.kc = self.km.client()
            self.kc.start_channels()
            try:
                self.kc.wait_for_ready(timeout=60)
                return
            except RuntimeError:
                self.kc.stop_channels()
                if self.km.is_alive() or attempt == 2:
                    raise
                self.km.cleanup_resources()

    def execute(self, code: str, timeout: float = 120) -> CellResult:
        msg_id = self.kc.execute(code)
        return self.collect(msg_id, timeout)

    def collect(self, msg_id: str, timeout: float = 120, on_output: Any = None) -> CellResult:
        outputs: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"cell did not finish in {timeout}s; outputs: {outputs}")
            try:
                msg = self.kc.get_iopub_msg(timeout=remaining)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                break
            if kind in ("stream", "display_data", "update_display_data", "execute_result", "error"):
                outputs.append(msg)
                if on_output:
                    on_output(msg)
        reply = self.kc.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=30)
        return CellResult(reply["content"], outputs)

    def alive(self) -> bool:
        return self.km.is_alive()

    def stop(self) -> None:
        if self.km.has_kernel:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


@pytest.fixture
def start_kernel(tmp_path: Path) -> Iterator[Any]:
    """Call with (cwd, **env) to start a kernel; all are stopped after the test."""
    started: list[KernelSession] = []

    def start(cwd: Path, **env: str) -> KernelSession:
        session = KernelSession(cwd, kernel_env(tmp_path, **env))
        started.append(session)
        return session

    yield start
    for session in started:
        session.stop()


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real JupyterHub (omnikernel.testing.hub) for the module's tests: users alice, bob and
    carol, group data-team (bob); stopped, with the users' servers, after the module."""
    from omnikernel.testing.hub import LocalHub

    workdir = tmp_path_factory.mktemp("hub")
    with LocalHub(workdir, environment=kernel_env(workdir)) as hub:
        yield hub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_server(
    app: str, tmp: Path, root: Path, env: dict[str, str], token: str, *options: str
) -> Iterator[str]:
    """`python -m APP` (jupyterlab or jupyter_server) on a free loopback port, serving `root`
    with `token`; yields its URL once it answers, stops it after (its log is in `tmp`)."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        app,
        "--no-browser",
        f"--port={port}",
        "--ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--BaseFileIdManager.db_path={tmp / 'fileid.db'}",
        *options,
    ]
    if os.getuid() == 0:
        argv.append("--allow-root")
    log_path = tmp / f"{app}.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(argv, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        else:
            server.kill()
            pytest.fail(f"{app} did not start: {log_path.read_text()[-3000:]}")
        try:
            yield url
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


# Tiers. Each test gets one of `unit`, `kernel`, `browser`, `sandbox`, `process` at collection:
# from a mark written on it (or on its module), else from the fixtures it uses, else `unit`.
# `make check` runs the unit tier; a unit test that starts a process fails (see below), so a
# test that should be in another tier cannot hide there.
TIERS = ("browser", "kernel", "sandbox", "process", "unit")
FIXTURE_TIERS = {
    "start_kernel": "kernel",  # a real kernel
    "kernel": "kernel",
    "lab": "kernel",  # a real jupyter lab server, which starts kernels
    "backend": "sandbox",  # a sandbox backend (bwrap, firejail), parametrized or a fixture
    "local_hub": "kernel",  # a real JupyterHub, whose users' servers start kernels
}


#: Words in a test's (or its fixtures') source that say it starts a process.
PROCESS_WORDS = (
    "subprocess",
    "Popen",
    "jupyter_server(",
    "require_cli",
    "require_claude",
    "sys.executable",
    "Running(",
    "ShareServer",
    "LocalHub",
)


def _source(item: pytest.Item) -> str:
    try:
        return inspect.getsource(item.function)  # type: ignore[attr-defined]
    except (AttributeError, OSError, TypeError):
        return ""


#: Modules whose every test is in one tier, though no fixture says so.
MODULE_TIERS = {
    "test_contract": "process",  # runs each harness's real CLI against the fake model
    "test_notebooks": "kernel",  # runs notebooks through nbclient, on a real kernel
    "test_sandbox_escapes": "sandbox",
    "test_kernel_conformance": "kernel",  # jupyter_kernel_test starts the kernel per class
    "test_hub_browser": "browser",  # a real JupyterHub, JupyterLab and Chromium
}


def tier_of(item: pytest.Item) -> str:
    marked = {m.name for m in item.iter_markers()} & set(TIERS)
    if marked:
        return next(t for t in TIERS if t in marked)  # the heaviest written mark
    module = getattr(getattr(item, "module", None), "__name__", "").rpartition(".")[2]
    if module in MODULE_TIERS:
        return MODULE_TIERS[module]
    source = _source(item)
    if "sync_playwright" in source or "CHROMIUM" in source:  # drives a real browser
        return "browser"
    names = getattr(item, "fixturenames", ())
    for name in names:
        if name in FIXTURE_TIERS:
            return FIXTURE_TIERS[name]
    # A subprocess started by the test or one of its fixtures: a CLI, a server, a harness.
    sources = [source]
    infos = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    for fixture, defs in infos.items():
        if fixture == "_unit_tests_start_no_process":
            continue
        for fixturedef in defs:
            with contextlib.suppress(OSError, TypeError):
                sources.append(inspect.getsource(fixturedef.func))
    if any(word in text for text in sources for word in PROCESS_WORDS):
        return "process"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item)
        if not item.get_closest_marker(tier):
            item.add_marker(tier)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch) -> None:
    """A unit test runs in this process only: starting a subprocess (a CLI, a kernel, a server)
    fails, with the marks that would move the test to its tier."""
    if not request.node.get_closest_marker("unit"):
        return

    def refuse(popen: subprocess.Popen, args: Any, *rest: Any, **kwargs: Any) -> None:
        raise AssertionError(
            f"{request.node.nodeid} is a unit test but starts a process ({args!r:.80}): mark it "
            "kernel, browser, sandbox or process (or use a fixture that does)"
        )

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
