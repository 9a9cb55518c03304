"""What the kernel's start leaves for later: heavy libraries load when first needed or once the
kernel is idle, and Codex runs as its native binary (no node launcher alive beside it).

No timing here (speed targets live in `make bench`): these assert the behaviour that makes the
start and the session lighter, so a later import at module level cannot undo it unnoticed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.turns import descendants
from omnikernel.harnesses.codex import CodexHarness, native_binary

from .conftest import REPO, require_cli

#: Imported only when first needed (or once the kernel is idle): together about 1 s of start.
#: The broker's (cryptography, h11, dulwich) load with a brokered host's sandbox, the gateway's
#: server (tornado's web server) with the first agent, its HTTP client (aiohttp) once idle,
#: tornado's client at a plan login's refresh, %export's and %session import's at their use.
DEFERRED = (
    "ipywidgets", "genai_prices", "markdown_it", "segno", "jupyter_server",
    "cryptography", "h11", "dulwich", "aiohttp", "tornado.web", "tornado.httpclient",
    "omnikernel.gateway.server", "omnikernel.view.export", "omnikernel.session.imports",
)  # fmt: skip
#: What an idle kernel loads in the background (the rest waits for its first use).
IDLE_LOADS = {"ipywidgets", "genai_prices", "markdown_it", "aiohttp"}
PROBE = f"import sys; print(json.dumps([m for m in {DEFERRED!r} if m in sys.modules]))"


def test_importing_the_kernel_leaves_the_heavy_libraries_out():
    done = subprocess.run(
        [sys.executable, "-c", "import json, omnikernel.kernel.app; " + PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout) == []
    # the control: the probe sees a module that was imported
    done = subprocess.run(
        [sys.executable, "-c", "import json, markdown_it; " + PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout) == ["markdown_it"]


def test_an_idle_kernel_loads_them_in_the_background(workdir, start_kernel):
    kernel = start_kernel(workdir, OMNIKERNEL_PREWARM="0")
    deadline = time.monotonic() + 30
    loaded: list[str] = []
    while time.monotonic() < deadline:
        result = kernel.execute("%%python\nimport json\n" + PROBE)
        assert result.status == "ok", result.text
        loaded = json.loads(result.text.strip().splitlines()[-1])
        if IDLE_LOADS <= set(loaded):
            break
        time.sleep(0.5)
    assert IDLE_LOADS <= set(loaded)
    # ipywidgets registered its comm target when it loaded late: widgets work in the kernel
    result = kernel.execute(
        "%%python\nimport ipywidgets\nprint('jupyter.widget' in get_ipython().kernel"
        ".comm_manager.targets)"
    )
    assert result.text.strip().endswith("True"), result.text


def test_codex_starts_its_native_binary_not_the_node_launcher(workdir, start_kernel):
    launcher = require_cli("codex")
    native = native_binary(launcher)
    assert native is not None, f"no native binary found beside {launcher}"
    binary, root = native
    assert Path(binary).read_bytes()[:4] == b"\x7fELF"
    assert (root / "bin" / "codex.js").exists()
    assert object.__new__(CodexHarness).command(launcher)[0] == binary
    # a launcher that is not npm's (a user's own build or wrapper) is started as given
    assert native_binary(shutil.which("true") or "/bin/true") is None

    kernel = start_kernel(workdir, OMNIKERNEL_HARNESS="codex")
    deadline = time.monotonic() + 60
    comms: dict[int, str] = {}
    while time.monotonic() < deadline:
        comms = {}
        for pid in descendants(kernel.km.provisioner.pid):
            try:
                comms[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
        if "codex" in comms.values():
            break
        time.sleep(0.2)
    assert "codex" in comms.values(), comms  # the prewarmed CLI
    assert "node" not in comms.values(), comms
