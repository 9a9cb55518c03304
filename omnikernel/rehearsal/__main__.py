"""`python -m omnikernel.rehearsal [--port N] [--scenario FILE]`: serve the fake model."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from omnikernel.rehearsal.fake_model import FakeModelServer
from omnikernel.rehearsal.scenario import Scenario

DEFAULT = Path(__file__).parent / "scenarios" / "default.json"


async def serve(port: int, scenario: Scenario) -> None:
    server = FakeModelServer(scenario, port=port)
    await server.start()
    print(f"fake model serving at {server.base_url}", flush=True)
    print(f"  ANTHROPIC_BASE_URL={server.base_url}  OPENAI_BASE_URL={server.base_url}/v1")
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m omnikernel.rehearsal", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--scenario", type=Path, default=DEFAULT, help="scenario JSON file")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, Scenario.load(args.scenario)))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
