"""The tiers conftest.py assigns at collection, checked on a few known tests."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import REPO

#: A few known tests, by the tier they must land in.
KNOWN = {
    "unit": "tests/test_policy.py::test_every_spelling_of_git_push_asks_after_an_install",
    "kernel": "tests/test_kernel_start.py::test_an_idle_kernel_loads_them_in_the_background",
    "browser": "tests/test_lab.py::test_quickstart_prompt_streams_in_jupyterlab",
    "sandbox": "tests/test_sandbox_escapes.py::test_credentials_other_projects_store_and_other_sessions_are_unreadable",
    "process": "tests/test_contract.py::TestClaudeContract::test_denied_tool_does_not_run",
}
#: A kernel test that bounds a duration, so it runs alone: `serial` beside its tier.
SERIAL = "tests/test_kernel_claude.py::test_interrupt_ends_the_turn_and_keeps_the_kernel"
FILES = sorted({nodeid.split("::")[0] for nodeid in [*KNOWN.values(), SERIAL]})


def collected(marks: str) -> set[str]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--co",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            marks,
            *FILES,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 5), done.stdout + done.stderr
    # Parametrized tests collect as name[param]: keep the name.
    return {line.split("[")[0] for line in done.stdout.splitlines() if "::" in line}


@pytest.mark.process
@pytest.mark.parametrize("tier", sorted(KNOWN))
def test_a_known_test_is_in_its_tier_and_no_other(tier):
    assert KNOWN[tier] in collected(tier)
    others = " or ".join(t for t in KNOWN if t != tier)
    assert KNOWN[tier] not in collected(others)


@pytest.mark.process
def test_the_serial_mark_is_kept_beside_the_tier():
    serial = collected("serial and kernel")
    assert SERIAL in serial
    assert not serial & set(KNOWN.values())
