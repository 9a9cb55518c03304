"""`pip install .` alone installs the kernelspec and enables the server extension."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile

from .conftest import REPO


def test_wheel_carries_kernelspec_extension_config_and_scenarios(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("omnikernel-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = next(n for n in names if n.endswith("share/jupyter/kernels/omnikernel/kernel.json"))
    spec = json.loads(zipfile.ZipFile(wheel).read(data))
    assert spec["display_name"] == "Omnigent" and spec["argv"][:4] == [
        "python",
        "-P",
        "-m",
        "omnikernel",
    ]
    config = next(n for n in names if n.endswith("jupyter_server_config.d/omnikernel.json"))
    enabled = json.loads(zipfile.ZipFile(wheel).read(config))
    assert enabled["ServerApp"]["jpserver_extensions"] == {"jupyter_ext": True}
    assert "omnikernel/rehearsal/scenarios/default.json" in names
    assert "jupyter_ext/share/static/live.js" in names  # the share page's script is a file
    # Pi's extensions: its gate, and its MCP client (Pi's CLI has none).
    assert {"omnikernel/harnesses/pi_gate.ts", "omnikernel/harnesses/pi_mcp.ts"} <= set(names)
    # Benchmarks measure the package; they are not part of it.
    assert not [n for n in names if n.startswith("benchmarks/") or "bench" in n.rsplit("/", 1)[-1]]
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA")))
    # Kernels learn which notebook they run from jupyter-server-fileid's ids.
    assert "Requires-Dist: jupyter-server-fileid" in metadata.decode()
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    entries = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "omnikernel.harnesses" in entries
    assert "omnikernel = omnikernel.cli.main:main" in entries  # the `omnikernel` command


def test_every_harness_cli_is_pinned_in_the_makefile_and_listed_with_its_install_command():
    """`make lab` / `make test` install exactly the versions the adapters are tested with, and
    `%agents` tells how to install each (its rows come from `Harness.probe`)."""
    from omnikernel.harnesses import discover

    makefile = (REPO / "Makefile").read_text()
    pins = dict(re.findall(r"^([A-Z_]+_VERSION) := (\S+)$", makefile, re.MULTILINE))
    installed = re.findall(r"(@?[a-z][\w./-]*)@\$\(([A-Z_]+_VERSION)\)", makefile)
    packages = {package: pins[var] for package, var in installed}
    harnesses = discover()
    assert {"claude", "codex", "pi", "gemini", "qwen", "opencode"} <= set(harnesses)
    for name, cls in harnesses.items():
        assert packages.get(cls.npm_package) == cls.pinned_version, (name, packages)
        info = cls.probe("/nonexistent/cli")
        assert info.install == f"npm install -g {cls.npm_package}@{cls.pinned_version}"
        assert not info.installed
