"""A credential the agent prints reaches no stored event, cell, export or log line.

The real Claude Code CLI runs `env` in the sandbox, against the scripted model: its output
carries the gateway's session secret (the CLI's API key). The test reads that secret from the
kernel's own side (a Python cell asks the session's harness), then looks for it everywhere the
turn went: the cell, the store's events and the SQLite file's raw bytes (WAL included), every
export format, and the kernel's log (its stderr, at DEBUG: the kernel's messages and whatever
the CLI writes to its stderr, plus a line carrying the secret on purpose). The share page and
`omnikernel attach` read the same store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from omnikernel.rehearsal import FakeModelServer, Scenario

from .conftest import KernelSession, kernel_env, require_claude

SCENARIO = {
    "rules": [
        {
            "match": "show me the environment",
            "steps": [
                {"text": "Here it is.", "tool_calls": [{"action": "shell", "command": "env"}]},
                {"text": "That was the environment."},
            ],
        },
    ]
}
LABEL = "[redacted: gateway secret]"


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as server:
        yield server


class LoggedKernel(KernelSession):
    """A kernel whose stderr (its log) goes to `log`."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Any):
        self.cwd = cwd
        self.km = KernelManager(kernel_name="omnikernel")
        self.km.start_kernel(cwd=str(cwd), env=env, stderr=log)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)


@pytest.fixture
def kernel(workdir: Path, tmp_path: Path, model: FakeModelServer) -> Iterator[LoggedKernel]:
    env = kernel_env(
        tmp_path,
        ANTHROPIC_BASE_URL=model.base_url,
        ANTHROPIC_API_KEY="test-real-key-1234",
        OMNIKERNEL_AUTO_APPROVE="1",
        OMNIKERNEL_SESSION_ID="redact",
    )
    with open(tmp_path / "kernel.log", "wb") as log:
        started = LoggedKernel(workdir, env, log)
        try:
            yield started
        finally:
            started.stop()


def store_bytes(store_dir: Path) -> bytes:
    """The store file as it lies on disk, its write-ahead log included."""
    return b"".join(p.read_bytes() for p in sorted(store_dir.iterdir()) if p.is_file())


def test_the_agents_env_never_shows_its_secret(model, kernel, tmp_path):
    debug = kernel.execute(
        "%%python\nimport logging\nours = logging.getLogger('omnikernel')\n"
        "ours.setLevel(10)\nfor h in ours.handlers: h.setLevel(10)"
    )
    assert debug.status == "ok", debug.text
    cell = kernel.execute("Please show me the environment.")
    assert cell.status == "ok", cell.text
    assert "That was the environment." in cell.text

    # The secret, from the kernel's side: what the session gave the CLI as its API key.
    asked = kernel.execute(
        "%%python\nprint('SECRET=' + get_ipython().kernel.agents._harnesses['claude']"
        ".ctx.upstream.api_key)"
    )
    secret = asked.text.split("SECRET=", 1)[1].strip()
    assert secret.startswith("omk-") and len(secret) > 40

    # The model got the real output (the CLI sent it), so `env` did print the secret...
    assert any(secret in str(r.body) for r in model.requests), "env did not print the secret"
    # ...but the cell shows the label instead.
    assert secret not in cell.text
    assert LABEL in cell.text

    # The store: neither its events nor its file's bytes hold it.
    store_dir = tmp_path / "store"
    history = kernel.execute(
        "%%python\nimport json\ns = get_ipython().kernel.agents\n"
        "print(json.dumps([e.to_dict() for e in "
        "s.store.events(s.session_id)]))"
    )
    stored = json.loads(history.text.strip().splitlines()[-1])
    results = [e["data"]["output"] for e in stored if e["kind"] == "tool_result"]
    assert results and any(LABEL in r for r in results)
    assert all(secret not in r for r in results)
    raw = store_bytes(store_dir)
    assert secret.encode() not in raw
    assert b"test-real-key-1234" not in raw

    # Every export (and so what `omnikernel attach` and the share page show: the same events).
    env = {**os.environ, "OMNIKERNEL_STORE": str(store_dir / "sessions.sqlite3")}
    for fmt in ("md", "html", "jsonl", "ipynb"):
        out = subprocess.run(
            [sys.executable, "-m", "omnikernel.cli.main", "export", "redact", "--format", fmt],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert secret not in out.stdout, fmt
        assert "redacted: gateway secret" in out.stdout, fmt

    # The kernel's log: a line carrying the secret (as a CLI's stray stdout line would) is
    # written redacted, like the CLI's stderr lines logged during the turn.
    logged = kernel.execute(
        "%%python\nimport logging\ns = get_ipython().kernel.agents\n"
        "logging.getLogger('omnikernel.harnesses.jsonl').warning("
        "'claude: ignored a line that is not JSON: %r', "
        "s._harnesses['claude'].ctx.upstream.api_key)"
    )
    assert logged.status == "ok", logged.text
    kernel.stop()
    log = (tmp_path / "kernel.log").read_text(errors="replace")
    assert "ignored a line that is not JSON: '[redacted: gateway secret]'" in log
    assert secret not in log
