"""The network asks end to end: the real CLIs in a real kernel and sandbox, the scripted model,
and a PyPI and an npm registry stand-in over TLS under their real names (`tests.standins`,
reached through ``OMNIKERNEL_EGRESS_RESOLVE``).

The agent's ``pip install`` / ``npm install`` reaches a host nothing allows: the connection
waits on an approval card ("pip wants to reach pypi.org:443 (`pip install ...`)"); approved,
the package lands in the notebook's folder; denied, the command fails at once with our reason
and the cell names the host and how to open it. Auto-approval is on throughout: it answers the
command's own ask, never the network's. The agent's client trusts the test CA because the
scripted command passes it (``--cert``, ``--cafile``), not because the product trusts it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trustme

from omnikernel.testing import FakeModelServer, Scenario

from .conftest import require_cli
from .standins import NpmStandIn, PyPIStandIn, write_ca
from .test_kernel_control import run_and_answer, upstreams

PIP = (
    "/usr/bin/python3 -m pip install --disable-pip-version-check --no-cache-dir "
    "--break-system-packages --cert ca.pem --target deps --index-url https://pypi.org/simple "
    "tinydb"
)
NPM = (
    "npm install --no-audit --no-fund --no-update-notifier --cafile ca.pem "
    "--registry https://registry.npmjs.org/ left-pad-standin"
)
SCENARIO = {
    "rules": [
        {"match": "install tinydb", "steps": [
            {"text": "Installing.", "tool_calls": [{"action": "shell", "command": PIP}]},
            {"text": "The pip step finished."},
        ]},
        {"match": "install left-pad", "steps": [
            {"text": "Installing.", "tool_calls": [{"action": "shell", "command": NPM}]},
            {"text": "The npm step finished."},
        ]},
    ]
}  # fmt: skip


@pytest.fixture
def registries(workdir: Path):
    ca = trustme.CA()
    write_ca(ca, workdir / "ca.pem")
    (workdir / "package.json").write_text('{"name": "app", "version": "1.0.0"}')
    with PyPIStandIn(ca) as pypi, NpmStandIn(ca) as npm:
        yield pypi, npm


@pytest.fixture
def model():
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as server:
        yield server


def kernel_for(harness, model, registries, workdir, start_kernel, **extra):
    require_cli(harness)
    pypi, npm = registries
    return start_kernel(
        workdir,
        **upstreams(
            model,
            OMNIKERNEL_AUTO_APPROVE="1",
            OMNIKERNEL_HARNESS=harness,
            OMNIKERNEL_EGRESS_RESOLVE=f"{pypi.resolve()},{npm.resolve()}",
            **extra,
        ),
    )


def test_pip_install_asks_for_each_host_and_lands_once_approved(
    model, registries, workdir, start_kernel
):
    pypi, _ = registries
    kernel = kernel_for("claude", model, registries, workdir, start_kernel)
    cell = run_and_answer(kernel, "Please install tinydb.", ["Approve", "Approve"])
    assert cell.status == "ok", cell.text
    assert "pip wants to reach pypi.org:443 (`" + PIP + "`)" in cell.text, cell.text
    assert "pip wants to reach files.pythonhosted.org:443" in cell.text
    assert "network: pypi.org:443 opened — approved by" in cell.text
    assert "(widget)" in cell.text
    installed = workdir / "deps" / "tinydb" / "__init__.py"
    assert "from the stand-in" in installed.read_text()
    assert {host for host, _ in pypi.requests} == {"pypi.org", "files.pythonhosted.org"}
    # Auto-approval answered the command's ask, a person each host's.
    assert "auto-approved" in cell.text


def test_a_denied_host_fails_fast_and_the_cell_says_how_to_open_it(
    model, registries, workdir, start_kernel
):
    pypi, _ = registries
    kernel = kernel_for("claude", model, registries, workdir, start_kernel)
    started = time.monotonic()
    cell = run_and_answer(kernel, "Please install tinydb.", ["Deny"])
    took = time.monotonic() - started
    assert cell.status == "ok", cell.text
    assert not (workdir / "deps" / "tinydb").exists()
    assert pypi.requests == []  # nothing reached the stand-in
    # What pip printed carries our reason; the cell names the host and how to open it.
    assert "Forbidden by the Omnigent sandbox" in cell.text, cell.text
    assert "The sandbox refused" in cell.text and "pypi.org:443" in cell.text
    assert "%sandbox allow @pypi" in cell.text
    # One card: pip's retries met the remembered denial, at once, and asked nobody again.
    assert cell.text.count("⚠ NETWORK") == 1
    print(f"denied pip install cell: {took:.1f} s (pip retries a refused proxy 5 times)")
    # The person opens the preset: the same install goes through without asking.
    assert "pypi.org, files.pythonhosted.org" in kernel.execute("%sandbox allow @pypi").text
    again = run_and_answer(kernel, "Please install tinydb again.", [])
    assert "wants to reach" not in again.text, again.text
    assert (workdir / "deps" / "tinydb" / "__init__.py").exists()


def test_npm_install_asks_and_lands_once_approved(model, registries, workdir, start_kernel):
    _, npm = registries
    kernel = kernel_for("claude", model, registries, workdir, start_kernel)
    cell = run_and_answer(kernel, "Please install left-pad.", ["Approve"])
    assert cell.status == "ok", cell.text
    assert "npm wants to reach registry.npmjs.org:443" in cell.text, cell.text
    index = workdir / "node_modules" / "left-pad-standin" / "index.js"
    assert "from the stand-in" in index.read_text()
    assert json.loads((workdir / "package.json").read_text())["dependencies"]
    assert {host for host, _ in npm.requests} == {"registry.npmjs.org"}
