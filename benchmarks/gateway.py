"""`python -m benchmarks.gateway`: the gateway's overhead on a long streamed answer.

Time to first token and total time of the same streamed Anthropic Messages response, straight
from the fake model and through the gateway, measured in the same run; medians of N runs and
their ratios (gateway / direct), so the figures do not depend on the machine's speed.

The three parties run as they do in use: the model (the fake, standing in for the vendor) in a
process of its own, the gateway on its thread in this process (as in the kernel), and the
client (standing in for the CLI) in a third process, the same one for both paths, with a fresh
connection per request on both. Run in one process, they shared one interpreter lock, so the
gateway's work could not overlap the model's or the client's as it does between processes.
The gateway's own CPU time per call (this process's, while the client waits) is reported too:
it does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omnikernel.gateway.server import Gateway
from omnikernel.gateway.upstream import Upstream


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


def client_loop() -> None:
    """The client process (``--client``): one request per ``URL KEY`` line read, its figures
    written back as a JSON line."""
    for line in sys.stdin:
        url, key = line.split()
        print(json.dumps(stream_once(url, "bench", key)), flush=True)


def measure(chars: int = 200_000, runs: int = 9) -> dict[str, Any]:
    text = ("lorem ipsum dolor sit amet " * (chars // 27 + 1))[:chars]
    scenario = {"rules": [{"match": "bench", "steps": [{"text": text}]}]}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "scenario.json").write_text(json.dumps(scenario))
        fake = subprocess.Popen(
            [sys.executable, "-m", "omnikernel.rehearsal", "--scenario", f"{tmp}/scenario.json"],
            stdout=subprocess.PIPE,
            text=True,
        )
        client = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.gateway", "--client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert fake.stdout is not None and client.stdin is not None and client.stdout is not None
        # tcp: the client measured here is on the host, outside any sandbox.
        gateway: Gateway | None = None
        try:
            fake_url = fake.stdout.readline().split()[-1]  # "fake model serving at URL"
            gateway = Gateway({"anthropic": Upstream("anthropic", fake_url, "k")}, tcp=True)
            gateway.start_in_thread()
            targets = {
                "direct": (fake_url, "k"),
                "gateway": (
                    gateway.base_url_for("bench", "anthropic", tcp=True),
                    gateway.issue_secret("bench"),
                ),
            }
            samples: dict[str, list[tuple[float, float, int]]] = {k: [] for k in targets}
            cpu: list[float] = []  # this process's CPU time (the gateway's) per gateway call
            for round_ in range(runs + 1):  # interleaved, so drift affects both alike
                for name, (url, key) in targets.items():
                    started = time.process_time()
                    client.stdin.write(f"{url} {key}\n")
                    client.stdin.flush()
                    sample = tuple(json.loads(client.stdout.readline()))
                    if round_:  # the first round warms up (imports, caches) untimed
                        samples[name].append(sample)  # type: ignore[arg-type]
                        if name == "gateway":
                            cpu.append(time.process_time() - started)
        finally:
            if gateway is not None:
                gateway.stop_thread()
            client.stdin.close()
            client.wait(30)
            fake.terminate()
            fake.wait(30)
    results: dict[str, Any] = {}
    for name, rows in samples.items():
        results[name] = {
            "ttft_s": statistics.median(r[0] for r in rows),
            "total_s": statistics.median(r[1] for r in rows),
            "chars": rows[-1][2],
        }
    results["gateway"]["cpu_s"] = statistics.median(cpu)
    results["ratio_ttft"] = results["gateway"]["ttft_s"] / results["direct"]["ttft_s"]
    results["ratio_total"] = results["gateway"]["total_s"] / results["direct"]["total_s"]
    results["runs"], results["response_chars"] = runs, chars
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chars", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_loop()
        return
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
    print(f"  the gateway's CPU time per call {r['gateway']['cpu_s'] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
