"""`python -m omnikernel.sandbox.bench`: start-up overhead of each sandbox backend.

Runs `/bin/true` bare and inside each backend (same spec as a harness gets, bridge and cgroup
included), interleaved, N times; reports medians and the ratio to the bare start measured in
the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from ..process import start_process
from .launch import BACKENDS, self_test, start_sandboxed
from .spec import SandboxSpec, for_agent


async def start_and_wait(backend: str | None, spec: SandboxSpec) -> float:
    started = time.perf_counter()
    if backend is None:
        proc = await start_process(["/bin/true"], cwd=spec.workdir, env=spec.env)
    else:
        proc = await start_sandboxed(["/bin/true"], spec, BACKENDS[backend])
    proc.stdin.close()
    await proc.wait()
    elapsed = time.perf_counter() - started
    await proc.kill()
    return elapsed


async def measure(runs: int = 25) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        spec = for_agent(workdir=work, env={"PATH": "/usr/bin:/bin"}, argv0="/bin/true",
                         private=())  # the spec a harness gets (`Harness.start_process`)
        names = [None] + [n for n in BACKENDS if not self_test(n)]
        samples: dict[str | None, list[float]] = {n: [] for n in names}
        for _ in range(runs):
            for name in names:
                samples[name].append(await start_and_wait(name, spec))
    return {("bare" if n is None else n): statistics.median(v) for n, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=25)
    result = asyncio.run(measure(parser.parse_args().runs))
    bare = result["bare"]
    print("sandbox start-up, /bin/true, median of runs (ratio to a bare start in this run):")
    for name, seconds in result.items():
        print(f"  {name:9} {seconds * 1000:7.2f} ms   x{seconds / bare:.1f}")


if __name__ == "__main__":
    main()
