"""`python -m benchmarks.gateway`: the gateway's overhead on a long streamed answer.

Time to first token and total time of the same streamed Anthropic Messages response, straight
from the fake model and through the gateway, measured in the same run; medians of N runs and
their ratios (gateway / direct), so the figures do not depend on the machine's speed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

from omnikernel.gateway.server import Gateway
from omnikernel.gateway.upstream import Upstream
from omnikernel.rehearsal import FakeModelServer, Scenario


def stream_once(base_url: str, prompt: str, key: str) -> tuple[float, float, int]:
    """(time to first text delta, total time, characters of text) of one streamed request."""
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    body = json.dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 10,
            "stream": True,
            "messages": [{"role": "user", "content": prompt}],
        }
    )
    started = time.perf_counter()
    connection.request(
        "POST",
        parts.path.rstrip("/") + "/v1/messages",
        body,
        {"content-type": "application/json", "x-api-key": key},
    )
    response = connection.getresponse()
    first, chars = 0.0, 0
    for line in response:
        if line.startswith(b"data:") and b"text_delta" in line:
            if not first:
                first = time.perf_counter() - started
            chars += len(json.loads(line[5:])["delta"]["text"])
    total = time.perf_counter() - started
    connection.close()
    return first, total, chars


def measure(chars: int = 200_000, runs: int = 9) -> dict[str, Any]:
    text = ("lorem ipsum dolor sit amet " * (chars // 27 + 1))[:chars]
    scenario = Scenario.from_dict({"rules": [{"match": "bench", "steps": [{"text": text}]}]})
    with FakeModelServer(scenario).start_in_thread() as fake:
        # tcp: the client measured here is on the host, outside any sandbox.
        gateway = Gateway({"anthropic": Upstream("anthropic", fake.base_url, "k")}, tcp=True)
        gateway.start_in_thread()
        try:
            results: dict[str, Any] = {}
            targets = {
                "direct": (fake.base_url, "k"),
                "gateway": (
                    gateway.base_url_for("bench", "anthropic", tcp=True),
                    gateway.issue_secret("bench"),
                ),
            }
            samples: dict[str, list[tuple[float, float, int]]] = {k: [] for k in targets}
            for _ in range(runs):  # interleaved, so drift affects both alike
                for name, (url, key) in targets.items():
                    samples[name].append(stream_once(url, "bench", key))
            for name, rows in samples.items():
                results[name] = {
                    "ttft_s": statistics.median(r[0] for r in rows),
                    "total_s": statistics.median(r[1] for r in rows),
                    "chars": rows[-1][2],
                }
        finally:
            gateway.stop_thread()
    results["ratio_ttft"] = results["gateway"]["ttft_s"] / results["direct"]["ttft_s"]
    results["ratio_total"] = results["gateway"]["total_s"] / results["direct"]["total_s"]
    results["runs"], results["response_chars"] = runs, chars
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chars", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    r = measure(args.chars, args.runs)
    print(
        f"gateway overhead, {r['response_chars']:,}-character streamed answer, "
        f"median of {r['runs']} runs:"
    )
    for name in ("direct", "gateway"):
        print(
            f"  {name:8} time to first token {r[name]['ttft_s'] * 1000:7.2f} ms   "
            f"total {r[name]['total_s'] * 1000:8.1f} ms"
        )
    print(f"  ratio    time to first token x{r['ratio_ttft']:.2f}   total x{r['ratio_total']:.2f}")


if __name__ == "__main__":
    main()
