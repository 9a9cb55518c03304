"""mypy, strict, over the layers below the kernel: `[tool.mypy]` in pyproject.toml names the
packages and the settings. A type error fails this test with mypy's own report."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def test_mypy_is_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-color-output", "--no-error-summary"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"mypy found type errors:\n{done.stdout}{done.stderr}"
