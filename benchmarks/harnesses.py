"""`python -m benchmarks.harnesses`: how long a stop takes, per harness and state.

For each installed harness, one session (real CLI, real sandbox, the scripted fake model) is
stopped in every state of `omnikernel.testing.stopping` (streaming, waiting for an approval,
running a command that left background processes, waiting on a slow model), `--runs` times;
after each stop a short prompt proves the agent goes on. Reports the median and the worst stop
latency (cancel to `stop_turn` returning, what the kernel waits for before the cell is idle)
against the promise of one second.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from omnikernel.gateway.upstream import UpstreamConfig
from omnikernel.harnesses import discover
from omnikernel.harnesses.acp import DEFAULT_ACP_AGENTS, acp_harness
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.session.core import AgentSession
from omnikernel.store.sessions import SessionStore
from omnikernel.testing.stopping import RECALL, SCENARIO, STATES, hold_approvals, stop_in_state

PROMISE_S = 1.0


async def measure(harness: str, runs: int, sandbox: str) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {state: [] for state in STATES}
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeModelServer(Scenario.from_dict(SCENARIO)) as model,
    ):
        work = Path(tmp) / "work"
        work.mkdir()
        session = AgentSession(
            store=SessionStore(Path(tmp) / "store.sqlite3"),
            session_id="bench",
            notebook=str(work / "bench.ipynb"),
            cwd=work,
            state_dir=Path(tmp) / "state",
            harness=harness,
            auto_approve=True,
            sandbox=sandbox,
            upstream_config=UpstreamConfig(
                anthropic_base_url=model.base_url,
                anthropic_api_key="bench",
                openai_base_url=model.base_url + "/v1",
                openai_api_key="bench",
            ),
        )
        try:
            [_ async for _ in session.run_prompt(RECALL)]
            hold_approvals(session, harness)
            for _ in range(runs):
                for state in STATES:
                    for started in work.glob("*.txt"):
                        started.unlink()
                    stopped = await stop_in_state(session, state, model, work)
                    samples[state].append(stopped.latency_s)
                    [_ async for _ in session.run_prompt(RECALL)]
        finally:
            await session.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sandbox", default="auto")
    parser.add_argument("harnesses", nargs="*", help="default: every installed harness")
    args = parser.parse_args()
    available = {**discover(), **{n: acp_harness(n, a) for n, a in DEFAULT_ACP_AGENTS.items()}}
    names = args.harnesses or [n for n, cls in available.items() if cls.find_binary()]
    print(
        f"stop latency, cancel to idle, median / worst of {args.runs} runs "
        f"(promise: under {PROMISE_S:.0f} s):"
    )
    width = max(len(n) for n in names)
    print(f"  {'':{width}}  " + "  ".join(f"{s:>17}" for s in STATES))
    for name in names:
        samples = asyncio.run(measure(name, args.runs, args.sandbox))
        cells = [
            f"{statistics.median(v) * 1000:6.0f} / {max(v) * 1000:6.0f} ms"
            for v in samples.values()
        ]
        worst = max(max(v) for v in samples.values())
        verdict = "ok" if worst < PROMISE_S else "SLOWER THAN PROMISED"
        print(f"  {name:{width}}  " + "  ".join(f"{c:>17}" for c in cells) + f"   {verdict}")


if __name__ == "__main__":
    main()
