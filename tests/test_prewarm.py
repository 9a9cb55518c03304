"""The warm first turn: the current harness's CLI starts, in its sandbox, once the kernel is idle
(and on `%agent NAME`); the first prompt uses that process; no model request is made before the
first prompt; nothing is left once the kernel stops."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.turns import descendants
from omnikernel.testing import FakeModelServer, Scenario

from .conftest import require_cli

SCENARIO = {"rules": [{"match": "say hello", "steps": [{"text": "Warm-hello!"}]}]}
#: A word of each CLI's machine-mode command line (see the harness adapters).
MARKERS = {"claude": "stream-json", "codex": "app-server", "pi": "rpc"}
MODEL_PATHS = ("/v1/messages", "/v1/responses", "/v1/chat")


def cli_pids(kernel_pid: int, harness: str) -> set[int]:
    """The kernel's descendants running `harness`'s CLI (not the sandbox's own processes)."""
    found = set()
    for pid in descendants(kernel_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm in ("bwrap", "firejail", "socat"):
            continue
        words = [a.decode(errors="replace") for a in argv]
        if any(harness in w for w in words) and any(MARKERS[harness] in w for w in words):
            found.add(pid)
    return found


def wait_for_cli(kernel_pid: int, harness: str, timeout: float = 60) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = cli_pids(kernel_pid, harness)
        if found:
            # Let a handshake (codex's thread/start) finish. Pi renames its process once it
            # runs, so the pids found, not a second match on command lines, are the CLI.
            time.sleep(1)
            return {pid for pid in found if Path(f"/proc/{pid}").exists()}
        time.sleep(0.2)
    raise AssertionError(f"no prewarmed {harness} process after {timeout} s")


def assert_same_cli(kernel_pid: int, warm: set[int], before: set[int]) -> None:
    """The prewarmed CLI answered: it still runs, and no CLI or sandbox was started since (the
    network bridge's socat forks one child per connection; pi renames its process, so pids
    and not command lines tell)."""
    now = set(descendants(kernel_pid))
    assert warm <= now, "the prewarmed CLI is gone"
    started = {p: comm_of(p) for p in now - before}
    assert all(comm in ("socat", "") for comm in started.values()), (
        f"the first prompt started processes: {started}"
    )


def comm_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def model_calls(model: FakeModelServer) -> list[str]:
    return [r.path for r in model.requests if r.path.startswith(MODEL_PATHS)]


@pytest.mark.parametrize("harness", ["claude", "codex", "pi"])
def test_first_prompt_uses_the_prewarmed_cli_and_shutdown_leaves_nothing(
    harness, workdir, start_kernel
):
    require_cli(harness)
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as model:
        kernel = start_kernel(
            workdir,
            OMNIKERNEL_HARNESS=harness,
            ANTHROPIC_BASE_URL=model.base_url,
            ANTHROPIC_API_KEY="test-key",
            OPENAI_BASE_URL=model.base_url + "/v1",
            OPENAI_API_KEY="test-key",
        )
        kernel_pid = kernel.km.provisioner.pid
        warm = wait_for_cli(kernel_pid, harness)
        assert warm, f"{harness} was not started ahead of the first prompt"
        assert model_calls(model) == [], "prewarming must not cost a model call"
        tree = set(descendants(kernel_pid))

        result = kernel.execute("Please say hello.")
        assert result.status == "ok", result.text
        assert "Warm-hello!" in result.text
        assert_same_cli(kernel_pid, warm, tree)
        assert model_calls(model), "the prompt reached the model"

        kernel.stop()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in tree):
            time.sleep(0.2)
        left = [p for p in tree if Path(f"/proc/{p}").exists()]
        assert not left, f"processes left after the kernel stopped: {left}"


def test_agent_switch_prewarms_the_new_harness_without_a_model_call(workdir, start_kernel):
    require_cli("codex")
    with FakeModelServer(Scenario.from_dict(SCENARIO)) as model:
        kernel = start_kernel(
            workdir,
            OMNIKERNEL_HARNESS="claude",
            OMNIKERNEL_PREWARM="0",
            ANTHROPIC_BASE_URL=model.base_url,
            ANTHROPIC_API_KEY="test-key",
            OPENAI_BASE_URL=model.base_url + "/v1",
            OPENAI_API_KEY="test-key",
        )
        kernel_pid = kernel.km.provisioner.pid
        time.sleep(3)  # past the kernel's fallback moment: with prewarm off nothing starts
        assert not cli_pids(kernel_pid, "claude")
        assert kernel.execute("%agent codex").status == "ok"
        warm = wait_for_cli(kernel_pid, "codex")
        assert model_calls(model) == []
        tree = set(descendants(kernel_pid))
        result = kernel.execute("Please say hello.")
        assert "Warm-hello!" in result.text, result.text
        assert_same_cli(kernel_pid, warm, tree)
