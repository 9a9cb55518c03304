"""Turn overhead, kernel start and live-session memory: a kernel cell against the bare CLI.

Every figure is a ratio to a baseline measured in the same run, interleaved with the subject so
the machine's load (2 cores, other jobs) weighs on both alike. The baseline of a turn is what a
`claude -p` user pays: the same CLI, a fresh process per turn, straight at the same scripted
fake model, auto-approving the same one shell command. The subject is a cell of a real
Omnigent kernel (kernel, gateway, sandbox, policy engine, store, rendering).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

from omnikernel.session.core import DEFAULT_RECYCLE_AFTER_TURNS
from omnikernel.testing import FakeModelServer, Scenario

PROMPT = "bench turn: write the marker file"
SCENARIO = {
    "rules": [
        {
            "match": "bench turn",
            "steps": [
                {"text": "Writing it.", "tool_calls": [{"action": "shell", "command": "echo ok > marker.txt"}]},
                {"text": "Done: marker.txt holds ok."},
            ],
        }
    ]
}  # fmt: skip
#: The model names each CLI knows without complaint (see shared harness notes).
MODELS = {"claude": "claude-sonnet-4-5", "codex": "gpt-5.5", "pi": "bench-model"}
QUIET = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1", "DISABLE_ERROR_REPORTING": "1", "PI_OFFLINE": "1",
    "PI_TELEMETRY": "0",
}  # fmt: skip
UPSTREAM_VARS = ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_KEY")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UPSTREAM_VARS}
    for var in ("CLAUDE_CODE_OAUTH_TOKEN", "OMNIKERNEL_CREDENTIALS", "OMNIKERNEL_AUTO_APPROVE"):
        env.pop(var, None)
    return {**env, **QUIET, **extra}


def direct_command(harness: str, base_url: str, home: Path) -> tuple[list[str], dict[str, str]]:
    """The CLI run by hand, one process per turn, auto-approving, at the fake model."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    env = clean_env(HOME=str(home), TMPDIR=str(home / "tmp"))
    binary = shutil.which(harness)
    if not binary:
        raise SystemExit(
            f"the `{harness}` CLI is not installed; install it with: make harness-clis"
        )
    if harness == "claude":
        env.update(
            ANTHROPIC_BASE_URL=base_url,
            ANTHROPIC_API_KEY="bench",
            CLAUDE_CONFIG_DIR=str(home / ".claude"),
        )
        argv = [
            binary,
            "-p",
            "--output-format",
            "json",
            "--model",
            MODELS["claude"],
            "--allowedTools=Bash",
            PROMPT,
        ]
    elif harness == "codex":
        env.update(CODEX_HOME=str(home / ".codex"), BENCH_KEY="bench")
        (home / ".codex").mkdir(exist_ok=True)
        provider = (
            f'model_providers.bench={{name="bench",base_url="{base_url}/v1",'
            'env_key="BENCH_KEY",wire_api="responses"}'
        )
        argv = [
            binary,
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--ignore-user-config",
            "-c",
            'model_provider="bench"',
            "-c",
            provider,
            "-c",
            "analytics.enabled=false",
            "--disable",
            "plugins",
            "-s",
            "danger-full-access",
            "-m",
            MODELS["codex"],
            PROMPT,
        ]
    elif harness == "pi":
        agent_dir = home / ".pi"
        agent_dir.mkdir(exist_ok=True)
        (agent_dir / "models.json").write_text(
            json.dumps(
                {
                    "providers": {
                        "bench": {
                            "baseUrl": base_url,
                            "api": "anthropic-messages",
                            "apiKey": "BENCH_KEY",
                            "models": [{"id": MODELS["pi"]}],
                        }
                    }
                }
            )
        )
        env.update(PI_CODING_AGENT_DIR=str(agent_dir), BENCH_KEY="bench")
        argv = [
            binary,
            "-p",
            "--mode",
            "json",
            "--provider",
            "bench",
            "--model",
            MODELS["pi"],
            "--no-session",
            PROMPT,
        ]
    else:
        raise ValueError(f"no direct command for harness {harness!r}")
    return argv, env


def direct_turn(harness: str, base_url: str, home: Path, work: Path) -> float:
    argv, env = direct_command(harness, base_url, home)
    marker = work / "marker.txt"
    marker.unlink(missing_ok=True)
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=work, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=120
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or not marker.exists():
        raise RuntimeError(
            f"direct {harness} turn failed ({done.returncode}): "
            f"{done.stderr.decode()[-800:]}{done.stdout.decode()[-800:]}"
        )
    return elapsed


class Kernel:
    """A started kernel (by kernelspec name) with a blocking client that runs one cell."""

    def __init__(self, name: str, cwd: Path, env: dict[str, str]):
        self.started = time.perf_counter()
        self.km = KernelManager(kernel_name=name)
        self.km.start_kernel(cwd=str(cwd), env=env, stderr=subprocess.DEVNULL)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.ready_s = time.perf_counter() - self.started

    def execute(self, code: str, timeout: float = 120) -> tuple[float, str]:
        """(seconds from request to idle, all text the cell showed)."""
        started = time.perf_counter()
        msg_id = self.kc.execute(code)
        texts: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            content = msg["content"]
            if msg["msg_type"] == "status" and content["execution_state"] == "idle":
                return time.perf_counter() - started, "".join(texts)
            if msg["msg_type"] == "stream":
                texts.append(content["text"])
            elif msg["msg_type"] == "error":
                texts.append(f"{content['ename']}: {content['evalue']}")
        raise TimeoutError(f"cell did not finish in {timeout}s")

    @property
    def pid(self) -> int:
        return self.km.provisioner.pid  # type: ignore[union-attr]

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_memory(pid: int) -> dict[str, float]:
    """RSS and PSS (MiB) of `pid` and its descendants, from /proc/*/smaps_rollup."""
    rss = pss = 0
    processes = 0
    for each in descendants(pid):
        try:
            rollup = Path(f"/proc/{each}/smaps_rollup").read_text()
        except OSError:
            continue
        processes += 1
        for line in rollup.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return {"rss_mib": rss / 1024, "pss_mib": pss / 1024, "processes": processes}


def kernel_env(tmp: Path, harness: str, model: FakeModelServer) -> dict[str, str]:
    return clean_env(
        OMNIKERNEL_STORE=str(tmp / "store" / "sessions.sqlite3"),
        OMNIKERNEL_STATE_DIR=str(tmp / "state"),
        OMNIKERNEL_HARNESS=harness,
        OMNIKERNEL_AUTO_APPROVE="1",
        OMNIKERNEL_MODEL=MODELS[harness],
        CLAUDE_CONFIG_DIR=str(tmp / "host-claude"),
        CODEX_HOME=str(tmp / "host-codex"),
        ANTHROPIC_BASE_URL=model.base_url,
        ANTHROPIC_API_KEY="bench",
        OPENAI_BASE_URL=model.base_url + "/v1",
        OPENAI_API_KEY="bench",
    )


def kernel_turn(kernel: Kernel, work: Path) -> float:
    marker = work / "marker.txt"
    marker.unlink(missing_ok=True)
    elapsed, text = kernel.execute(PROMPT)
    if not marker.exists():
        raise RuntimeError(f"kernel turn did not run the command: {text[-800:]}")
    return elapsed


#: How long after the kernel is ready the first prompt is sent: a person opens the notebook,
#: then types (the kernel starts the CLI meanwhile, see `AgentSession.prewarm`).
THINK_S = 3.0


def measure_harness(
    harness: str,
    kernels: int = 3,
    later: int = 5,
    memory_turns: int = 200,
    think_s: float = THINK_S,
) -> dict[str, Any]:
    """First and later turns (kernel and direct, interleaved) and the live session's memory."""
    first, later_k, direct, after_recycle = [], [], [], []
    memory: dict[str, Any] = {}
    recycle_after = DEFAULT_RECYCLE_AFTER_TURNS
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        FakeModelServer(Scenario.from_dict(SCENARIO)) as model,
    ):
        tmp = Path(tmp_name)
        for round_ in range(kernels):
            work = tmp / f"work{round_}"
            work.mkdir()
            direct.append(direct_turn(harness, model.base_url, tmp / f"home{round_}", work))
            kernel = Kernel("omnikernel", work, kernel_env(tmp / f"k{round_}", harness, model))
            try:
                time.sleep(think_s)
                first.append(kernel_turn(kernel, work))
                for _ in range(later):
                    direct.append(direct_turn(harness, model.base_url, tmp / f"home{round_}", work))
                    later_k.append(kernel_turn(kernel, work))
                if round_ == kernels - 1 and memory_turns:
                    time.sleep(0.5)  # let the turn's short-lived children go
                    memory["after_first_turns"] = {"turns": 1 + later, **tree_memory(kernel.pid)}
                    for done in range(1 + later, memory_turns):
                        if recycle_after and done % recycle_after == 0:
                            # The CLI restarts now, between turns (`omnikernel.session.idle`):
                            # the next prompt comes after a person's pause, as a first one.
                            time.sleep(think_s)
                            after_recycle.append(kernel_turn(kernel, work))
                        else:
                            kernel_turn(kernel, work)
                    time.sleep(0.5)
                    memory["after_n_turns"] = {"turns": memory_turns, **tree_memory(kernel.pid)}
                    store = tmp / f"k{round_}" / "store" / "sessions.sqlite3"
                    memory["store_mib"] = (
                        sum(p.stat().st_size for p in store.parent.glob("sessions.sqlite3*"))
                        / 2**20
                    )
            finally:
                kernel.stop()
    base = statistics.median(direct)
    return {
        "direct_s": base,
        "first_turn_s": statistics.median(first),
        "later_turn_s": statistics.median(later_k),
        "first_ratio": statistics.median(first) / base,
        "later_ratio": statistics.median(later_k) / base,
        "memory": memory,
        "after_recycle_s": after_recycle,
        "recycle_after_turns": recycle_after,
        "samples": {
            "direct": direct,
            "first": first,
            "later": later_k,
            "after_recycle": after_recycle,
        },
    }


def measure_switch(harness: str, turns: int = 6, think_s: float = THINK_S) -> dict[str, Any]:
    """The live session's memory after `%agent HARNESS` in a kernel that started (ahead) the
    default claude, against a kernel whose own harness it is, after the same turns; and the
    switched harness's first turn there against the CLI run directly."""
    with (
        tempfile.TemporaryDirectory() as tmp_name,
        FakeModelServer(Scenario.from_dict(SCENARIO)) as model,
    ):
        tmp = Path(tmp_name)
        result: dict[str, Any] = {}
        for label, default in (("own", harness), ("switched", "claude")):
            work = tmp / f"work-{label}"
            work.mkdir()
            if label == "switched":
                result["direct_s"] = direct_turn(harness, model.base_url, tmp / "home", work)
            env = kernel_env(tmp / f"k-{label}", default, model)
            env["OMNIKERNEL_MODEL"] = MODELS[harness] if default == harness else MODELS["claude"]
            kernel = Kernel("omnikernel", work, env)
            try:
                time.sleep(think_s)  # the default's CLI comes up meanwhile
                if label == "switched":
                    _, shown = kernel.execute(f"%agent {harness} --model {MODELS[harness]}")
                    if "Error" in shown:  # (its answer is Markdown, not collected)
                        raise RuntimeError(f"%agent {harness} failed: {shown[-800:]}")
                    time.sleep(think_s)  # the next prompt is written meanwhile
                    result["first_turn_s"] = kernel_turn(kernel, work)
                for _ in range(turns - (label == "switched")):
                    kernel_turn(kernel, work)
                time.sleep(0.5)  # let the turn's short-lived children go
                result[label] = {"turns": turns, **tree_memory(kernel.pid)}
            finally:
                kernel.stop()
    return result


def measure_kernel_start(runs: int = 5) -> dict[str, Any]:
    """Start to idle of the Omnigent kernel against a plain IPython kernel, interleaved."""
    samples: dict[str, list[float]] = {"python3": [], "omnikernel": []}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = clean_env(
            OMNIKERNEL_STORE=str(tmp / "store.sqlite3"),
            OMNIKERNEL_STATE_DIR=str(tmp / "state"),
            # Both kernels run from compiled bytecode, as an installed package does
            # (a checkout run with PYTHONDONTWRITEBYTECODE=1 recompiles ours on
            # every start: about 0.3 s); the untimed first round compiles it.
            PYTHONPYCACHEPREFIX=str(tmp / "pycache"),
        )
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for round_ in range(runs + 1):
            for name in samples:
                kernel = Kernel(name, tmp, env)
                if round_:
                    samples[name].append(kernel.ready_s)
                kernel.stop()
    plain, ours = statistics.median(samples["python3"]), statistics.median(samples["omnikernel"])
    return {"omnikernel_s": ours, "ipython_s": plain, "ratio": ours / plain}
