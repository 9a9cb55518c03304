"""`python -m benchmarks.sandbox`: start-up overhead of each sandbox backend.

Runs `/bin/echo ready` bare and inside each backend (same spec as a harness gets, bridge and
cgroup included), interleaved, N times; reports medians and the ratio to the bare start
measured in the same run. The start is the time until the program inside has run (its line
arrived): what a harness waits for. The exit (the sandbox's teardown, paid when a harness
stops) is reported beside it: firejail's `--deterministic-shutdown` alone adds about 100 ms
there.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from omnikernel.proc.process import start_process
from omnikernel.sandbox.launch import BACKENDS, self_test, start_sandboxed
from omnikernel.sandbox.spec import SandboxSpec, for_agent


async def start_and_wait(backend: str | None, spec: SandboxSpec) -> tuple[float, float]:
    """(seconds until the program inside has run, seconds until the sandbox has exited)."""
    argv = ["/bin/echo", "ready"]
    started = time.perf_counter()
    if backend is None:
        proc = await start_process(argv, cwd=spec.workdir, env=spec.env)
    else:
        proc = await start_sandboxed(argv, spec, BACKENDS[backend])
    line = await proc.stdout.readline()
    ran = time.perf_counter() - started
    proc.stdin.close()
    await proc.wait()
    exited = time.perf_counter() - started
    await proc.kill()
    if line != b"ready\n":
        raise RuntimeError(f"{backend}: the sandboxed echo said {line!r}")
    return ran, exited


async def measure(runs: int = 25) -> dict[str, dict[str, float]]:
    """Per backend ("bare" for none): medians of "start" and "exit" (seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        spec = for_agent(
            workdir=work, env={"PATH": "/usr/bin:/bin"}, argv0="/bin/echo", private=()
        )  # the spec a harness gets (`Harness.start_process`)
        names = [None] + [n for n in BACKENDS if not self_test(n)]
        samples: dict[str | None, list[tuple[float, float]]] = {n: [] for n in names}
        for _ in range(runs):
            for name in names:
                samples[name].append(await start_and_wait(name, spec))
    return {
        ("bare" if n is None else n): {
            "start": statistics.median(s for s, _ in v),
            "exit": statistics.median(e for _, e in v),
        }
        for n, v in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=25)
    result = asyncio.run(measure(parser.parse_args().runs))
    bare = result["bare"]
    print("sandbox start-up, /bin/echo, median of runs (ratio to a bare start in this run):")
    for name, r in result.items():
        print(
            f"  {name:9} start {r['start'] * 1000:7.2f} ms  x{r['start'] / bare['start']:<5.1f}"
            f"  start to exit {r['exit'] * 1000:7.2f} ms  x{r['exit'] / bare['exit']:.1f}"
        )


if __name__ == "__main__":
    main()
