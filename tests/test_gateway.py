"""The model gateway with real SDK clients and a real upstream (the fake model) on loopback."""

from __future__ import annotations

import http.server
import json
import threading
import time

import anthropic
import httpx
import openai
import pytest

from omnikernel.gateway import (
    Budget,
    Gateway,
    Price,
    PriceTable,
    SpendLedger,
    SpendRecord,
    StreamMeter,
    TokenUsage,
    cross_check,
)
from omnikernel.gateway.upstream import Upstream
from omnikernel.rehearsal import FakeModelServer, Scenario

REAL_ANTHROPIC_KEY = "sk-ant-real-secret-0001"
REAL_OPENAI_KEY = "sk-openai-real-secret-0002"
REAL_GEMINI_KEY = "AIza-real-gemini-secret-0003"
USAGE = {"input_tokens": 2000, "output_tokens": 300, "cache_read_tokens": 500}
SCENARIO = Scenario.from_dict(
    {
        "rules": [
            {"match": "count", "steps": [{"text": "counted", "usage": USAGE}]},
            {"match": "long story", "steps": [
                {"text": "tale " * 400, "chunk_delay": 0.01,
                 "usage": {"input_tokens": 10, "output_tokens": 400_000}}]},
            {"match": "tool please", "steps": [
                {"text": "ok", "tool_calls": [{"action": "shell", "command": "echo 1"}]}]},
        ]
    }
)  # fmt: skip


@pytest.fixture
def fake():
    with FakeModelServer(SCENARIO).start_in_thread() as server:
        yield server


@pytest.fixture
def gateway(fake):
    records: list[SpendRecord] = []
    gw = Gateway(
        {
            "anthropic": Upstream("anthropic", fake.base_url, REAL_ANTHROPIC_KEY),
            "openai": Upstream("openai", fake.base_url + "/v1", REAL_OPENAI_KEY),
            "gemini": Upstream("gemini", fake.base_url, REAL_GEMINI_KEY),
        },
        on_spend=records.append,
    ).start_in_thread()
    gw.records = records  # type: ignore[attr-defined]
    yield gw
    gw.stop_thread()


def settle(gw: Gateway) -> list[SpendRecord]:
    """The gateway's records once it has finished metering (it charges after the last chunk)."""
    deadline = time.monotonic() + 5
    while gw.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    return gw.records  # type: ignore[attr-defined,no-any-return]


def claude_client(gw: Gateway) -> anthropic.Anthropic:
    """Claude's client, as the session sets it up: the gateway's URL and a secret issued for it."""
    return anthropic.Anthropic(
        base_url=gw.base_url_for("claude", "anthropic", tcp=True),
        api_key=gw.issue_secret("claude"),
        max_retries=0,
    )


def openai_client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.base_url_for("codex", "openai", tcp=True),
        api_key=gw.issue_secret("codex"),
        max_retries=0,
    )


def expected_cost(vendor: str, model: str, usage: dict[str, int]) -> float:
    price = PriceTable.load().lookup(vendor, model)
    assert price is not None
    return (
        usage["input_tokens"] * price.input
        + usage["output_tokens"] * price.output
        + usage.get("cache_read_tokens", 0) * price.cache_read
    ) / 1e6


def test_all_three_formats_pass_through_and_are_metered(gateway, fake):
    claude, oai = claude_client(gateway), openai_client(gateway)
    with claude.messages.stream(
        model="claude-sonnet-4-5", max_tokens=9, messages=[{"role": "user", "content": "count"}]
    ) as s:
        assert "".join(s.text_stream) == "counted"
    whole = claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=9, messages=[{"role": "user", "content": "count"}]
    )
    assert whole.content[0].text == "counted"
    events = list(oai.responses.create(model="gpt-5", input="count", stream=True))
    assert events[-1].type == "response.completed"
    chat = oai.chat.completions.create(
        model="gpt-5",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert "".join(c.choices[0].delta.content or "" for c in chat if c.choices) == "counted"

    records = settle(gateway)
    assert [(r.harness, r.vendor) for r in records] == [("claude", "anthropic")] * 2 + [
        ("codex", "openai")
    ] * 2
    assert all(not r.estimated for r in records)
    want_claude = expected_cost("anthropic", "claude-sonnet-4-5", USAGE)
    assert records[0].cost_usd == pytest.approx(want_claude)
    assert records[1].cost_usd == pytest.approx(want_claude)
    # OpenAI reports cached tokens inside input_tokens: the gateway separates them.
    assert records[2].input_tokens == USAGE["input_tokens"] - USAGE["cache_read_tokens"]
    openai_usage = {**USAGE, "input_tokens": USAGE["input_tokens"] - USAGE["cache_read_tokens"]}
    assert records[2].cost_usd == pytest.approx(expected_cost("openai", "gpt-5", openai_usage))
    assert gateway.ledger.total_usd == pytest.approx(sum(r.cost_usd for r in records))


def test_real_key_goes_upstream_and_the_harness_secret_never_does(gateway, fake):
    claude, oai = claude_client(gateway), openai_client(gateway)
    claude.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "count"}])
    oai.responses.create(model="gpt-5", input="count")
    anthropic_headers, openai_headers = fake.requests[-2].headers, fake.requests[-1].headers
    assert anthropic_headers["x-api-key"] == REAL_ANTHROPIC_KEY
    assert "authorization" not in anthropic_headers
    assert openai_headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"
    sent = json.dumps([r.headers for r in fake.requests])
    assert claude.api_key not in sent and oai.api_key not in sent


def test_unknown_model_is_unpriced_not_free(gateway):
    claude_client(gateway).messages.create(
        model="claude-from-the-future",
        max_tokens=5,
        messages=[{"role": "user", "content": "count"}],
    )
    (record,) = settle(gateway)
    assert record.cost_usd is None and not record.priced
    assert gateway.ledger.unpriced == 1 and gateway.ledger.total_usd == 0


def test_budget_fails_closed_on_an_unpriced_model(gateway, fake):
    gateway.budget.limit_usd = 10.0
    with pytest.raises(anthropic.APIStatusError) as err:
        claude_client(gateway).messages.create(
            model="claude-from-the-future",
            max_tokens=5,
            messages=[{"role": "user", "content": "count"}],
        )
    assert err.value.status_code == 402 and "has no price" in str(err.value)
    assert not fake.requests  # nothing went upstream


def test_budget_holds_the_next_request(gateway, fake):
    gateway.budget.limit_usd = 0.001
    claude = claude_client(gateway)
    claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "count"}]
    )
    seen = len(fake.requests)
    with pytest.raises(anthropic.APIStatusError) as err:
        claude.messages.create(
            model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "count"}]
        )
    assert err.value.status_code == 402 and "%budget" in str(err.value)
    assert len(fake.requests) == seen  # held at the gateway: nothing went upstream
    gateway.budget.limit_usd = 100.0  # raising it lets the session continue
    claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "count"}]
    )


def test_budget_cuts_a_stream_that_crosses_it(gateway):
    gateway.budget.limit_usd = 0.0005  # about 33 output tokens of claude-sonnet-4-5
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as err:
        with claude_client(gateway).messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=5,
            messages=[{"role": "user", "content": "a long story"}],
        ) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert "budget" in str(err.value).lower()
    streamed = "".join(received)
    assert 0 < len(streamed) < len("tale " * 400)  # cut mid-way, not held and not finished
    (record,) = settle(gateway)
    assert record.estimated and record.cost_usd is not None


def test_rehearsal_calls_cost_nothing_and_no_budget_counts_them(gateway, fake):
    """The offline rehearsal model spends nothing: its calls are $0 rehearsal records (their
    tokens still count), so a dollar budget never stops a rehearsal, even of a model with no
    price."""
    gateway.upstreams["anthropic"] = Upstream("anthropic", fake.base_url, "k", offline=True)
    gateway.budget.limit_usd = 0.000001
    claude = claude_client(gateway)
    for model in ("claude-sonnet-4-5", "claude-from-the-future"):
        claude.messages.create(
            model=model, max_tokens=5, messages=[{"role": "user", "content": "count"}]
        )
    records = settle(gateway)
    assert [(r.cost_usd, r.rehearsal, r.priced_as) for r in records] == [(0.0, True, "")] * 2
    assert gateway.ledger.total_usd == 0 and gateway.ledger.only_rehearsal
    assert gateway.ledger.total_tokens == 2 * (USAGE["input_tokens"] + USAGE["output_tokens"])
    (row, _) = gateway.ledger.by_harness_and_model()
    assert row.cost_text() == "$0 (rehearsal)"


def test_a_scenario_prices_rehearsal_calls_on_purpose(gateway, fake):
    """`price_as` prices a rehearsal as a real model, to show or test dollar rules offline."""
    gateway.upstreams["anthropic"] = Upstream(
        "anthropic", fake.base_url, "k", offline=True, price_as="anthropic/claude-sonnet-4-5"
    )
    claude_client(gateway).messages.create(
        model="claude-opus-4-8", max_tokens=5, messages=[{"role": "user", "content": "count"}]
    )
    (record,) = settle(gateway)
    assert record.rehearsal and record.priced_as == "anthropic/claude-sonnet-4-5"
    assert record.cost_usd == pytest.approx(expected_cost("anthropic", "claude-sonnet-4-5", USAGE))
    (row,) = gateway.ledger.by_harness_and_model()
    assert "(rehearsal priced as anthropic/claude-sonnet-4-5)" in row.cost_text()
    gateway.budget.limit_usd = record.cost_usd / 2  # past it: the next call is held
    with pytest.raises(anthropic.APIStatusError) as err:
        claude_client(gateway).messages.create(
            model="claude-opus-4-8", max_tokens=5, messages=[{"role": "user", "content": "count"}]
        )
    assert err.value.status_code == 402


def test_record_then_replay_offline(gateway, fake, tmp_path):
    cassette = tmp_path / "nb.cassette.jsonl"
    gateway.record_to(cassette)
    claude = claude_client(gateway)
    first = claude.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=5,
        tools=[
            {
                "name": "Bash",
                "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
            }
        ],
        messages=[{"role": "user", "content": "tool please"}],
    )
    with claude.messages.stream(
        model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "count"}]
    ) as s:
        recorded_text = "".join(s.text_stream)
    settle(gateway)  # the exchange is written once its stream has been forwarded
    text = cassette.read_text()
    assert REAL_ANTHROPIC_KEY not in text and claude.api_key not in text
    assert len(text.splitlines()) == 2

    fake.stop_thread()  # no upstream from here on
    gateway.replay_from(cassette)
    again = claude.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=5,
        tools=[
            {
                "name": "Bash",
                "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
            }
        ],
        messages=[{"role": "user", "content": "tool please"}],
    )
    assert [b.model_dump() for b in again.content] == [b.model_dump() for b in first.content]
    with claude.messages.stream(
        model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "count"}]
    ) as s:
        assert "".join(s.text_stream) == recorded_text
    replays = settle(gateway)[-2:]
    assert all(r.cost_usd == 0 for r in replays) and replays[-1].input_tokens == 2000

    with pytest.raises(anthropic.BadRequestError) as err:
        claude.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=5,
            messages=[{"role": "user", "content": "something new"}],
        )
    assert "does not match the cassette" in str(err.value) or "more than was recorded" in str(
        err.value
    )


def test_dead_upstream_is_a_clear_502(fake):
    fake_url = fake.base_url
    fake.stop_thread()
    gw = Gateway({"anthropic": Upstream("anthropic", fake_url, "k")}).start_in_thread()
    try:
        with pytest.raises(anthropic.APIStatusError) as err:
            claude_client(gw).messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert err.value.status_code == 502 and fake_url in str(err.value)
    finally:
        gw.stop_thread()


@pytest.mark.parametrize(
    ("wire", "frames", "expected"),
    [
        ("messages",
         [{"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 5, "cache_read_input_tokens": 2}}},
          {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "abcdefgh"}},
          {"type": "message_delta", "usage": {"output_tokens": 9}}],
         TokenUsage("m", 5, 9, 2, 0)),
        ("responses",
         [{"type": "response.output_text.delta", "delta": "abcd"},
          {"type": "response.completed", "response": {"model": "g", "usage": {
              "input_tokens": 10, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 3}}}],
         TokenUsage("g", 6, 3, 4, 0)),
        ("chat/completions",
         [{"model": "c", "choices": [{"delta": {"content": "abcd"}}]},
          {"model": "c", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}],
         TokenUsage("c", 7, 2, 0, 0)),
        ("streamGenerateContent",
         [{"candidates": [{"content": {"parts": [{"text": "abcd"}]}}], "modelVersion": "gm",
           "usageMetadata": {"promptTokenCount": 12}},
          {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": {}}}]},
                           "finishReason": "STOP"}],
           "usageMetadata": {"promptTokenCount": 12, "cachedContentTokenCount": 5,
                             "candidatesTokenCount": 4, "thoughtsTokenCount": 6}}],
         TokenUsage("gm", 7, 10, 5, 0)),
    ],
)  # fmt: skip
def test_stream_meter_reads_each_format(wire, frames, expected):
    meter = StreamMeter(wire)
    raw = b"".join(f"data: {json.dumps(f)}\n\n".encode() for f in frames)
    for i in range(0, len(raw), 7):  # arbitrary chunk boundaries
        meter.feed(raw[i : i + 7])
    assert meter.usage == expected and meter.reported_output


def test_meter_estimates_output_while_streaming():
    meter = StreamMeter("messages")
    meter.feed(b'data: {"type": "content_block_delta", "delta": {"text": "' + b"x" * 40 + b'"}}\n')
    assert meter.estimated_output_tokens == 10 and not meter.reported_output


def test_prices_overrides_and_dated_names():
    table = PriceTable.load(
        overrides={
            "anthropic/my-model": {"input": 1, "output": 2},
            "shared": {"input": 4, "output": 8},
        }
    )
    assert table.lookup("anthropic", "my-model") == Price(1.0, 2.0)
    assert table.lookup("openai", "shared") == Price(4.0, 8.0)
    assert table.lookup("anthropic", "claude-sonnet-4-5-20990101") == table.lookup(
        "anthropic", "claude-sonnet-4-5"
    )
    assert table.cost("anthropic", TokenUsage("nope", 1, 1)) is None  # unpriced, never $0
    assert table.source.startswith("genai-prices ")


@pytest.mark.parametrize(
    ("model", "usage", "usd"),
    [
        # $5 / $25 per million tokens, suffixed names match too.
        ("claude-opus-4-8", (100, 20, 0, 0), 0.001),
        ("claude-opus-4-8[1m]", (100, 20, 0, 0), 0.001),
        # Cache reads and writes at their own prices ($0.30 and $3.75 per million).
        ("claude-sonnet-4-5", (1000, 0, 1000, 1000), (3000 + 300 + 3750) / 1e6),
        # Past 200k input tokens the whole call is priced at the higher tier ($6 per million).
        ("claude-sonnet-4-5-20250929", (300_000, 0, 0, 0), 1.8),
    ],
)
def test_genai_prices_matches_names_tiers_and_cache(model, usage, usd):
    assert PriceTable.load().cost("anthropic", TokenUsage(model, *usage)) == pytest.approx(usd)


def test_every_pinned_cli_default_model_is_priced():
    from omnikernel.harnesses import discover

    # Claude Code chooses its own default (the kernel passes none): the one its pinned version
    # sends, as seen on the wire in tests/test_kernel_control.py.
    defaults = {"claude": "claude-opus-4-8"}
    # Qwen Code's model is whatever its OpenAI-compatible endpoint serves: none is priced until
    # the user gives a price (c.OmniKernel.prices), and a USD budget says so (tested above).
    unpriced = {"qwen"}
    for name, cls in discover().items():
        if name in unpriced:
            assert cls.default_model is None, name
            continue
        model = cls.default_model or defaults[name]
        assert PriceTable.load().lookup(cls.wire, model) is not None, (name, model)


def test_ledger_budget_and_cross_check():
    ledger = SpendLedger(
        [
            SpendRecord("claude", "anthropic", "a", 1, 2, 0, 0, 0.5),
            SpendRecord("claude", "anthropic", "a", 1, 2, 3, 0, 0.25),
            SpendRecord("codex", "openai", "b", 1, 1, 0, 0, None),
        ]
    )
    rows = ledger.by_harness_and_model()
    assert [(r.harness, r.requests, r.cost_usd, r.unpriced) for r in rows] == [
        ("claude", 2, 0.75, 0),
        ("codex", 1, 0.0, 1),
    ]
    assert ledger.total_usd == 0.75 and ledger.unpriced == 1
    assert Budget(1.0).exceeded(0.75, 0.3) and not Budget(1.0).exceeded(0.75)
    assert not Budget(None).exceeded(1e9)
    assert cross_check(1.0, 1.009) and not cross_check(1.0, 1.02) and cross_check(1.0, None)


@pytest.mark.process  # the fake model and the client run in processes of their own
def test_gateway_bench_measures_both_paths():
    from benchmarks.gateway import measure

    result = measure(chars=2000, runs=2)
    for path in ("direct", "gateway"):
        assert 0 < result[path]["ttft_s"] <= result[path]["total_s"]
        assert result[path]["chars"] == 2000  # the whole stream arrived both ways
    assert result["ratio_total"] > 0 and result["gateway"]["cpu_s"] > 0


def gemini_call(
    gw: Gateway, text: str, *, stream: bool = True, secret: str | None = None, **extra: object
) -> httpx.Response:
    """A Gemini API call as Gemini CLI makes it (the google-genai SDK's wire): the model in the
    path, the key in ``x-goog-api-key``, ``alt=sse`` when streamed."""
    base = gw.base_url_for("gemini", "gemini", tcp=True)
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return httpx.post(
        f"{base}/v1beta/models/gemini-2.5-flash:{method}",
        headers={"x-goog-api-key": secret or gw.issue_secret("gemini")},
        json={"contents": [{"role": "user", "parts": [{"text": text}]}], **extra},
        timeout=30,
    )


def sse_payloads(response: httpx.Response) -> list[dict]:
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]


def test_gemini_api_streamed_and_whole_is_metered_with_the_real_key_upstream(gateway, fake):
    streamed = gemini_call(gateway, "count")
    assert streamed.status_code == 200, streamed.text
    chunks = sse_payloads(streamed)
    text = "".join(
        p.get("text", "") for c in chunks for p in c["candidates"][0]["content"]["parts"]
    )
    assert text == "counted" and chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    whole = gemini_call(gateway, "count", stream=False).json()
    assert whole["candidates"][0]["content"]["parts"][0]["text"] == "counted"
    tools = [{"functionDeclarations": [{"name": "run_shell_command", "parametersJsonSchema": {
        "type": "object", "properties": {"command": {"type": "string"}}}}]}]  # fmt: skip
    called = sse_payloads(gemini_call(gateway, "tool please", tools=tools))
    call = called[-1]["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert call == {"name": "run_shell_command", "args": {"command": "echo 1"}}

    records = settle(gateway)
    assert [(r.harness, r.vendor, r.model) for r in records][:2] == [
        ("gemini", "gemini", "gemini-2.5-flash")
    ] * 2
    assert all(not r.estimated for r in records)
    # Gemini counts cached tokens inside promptTokenCount (the fake sends 2000 + 500): the
    # gateway separates them again, and prices thinking tokens as output.
    assert (records[0].input_tokens, records[0].cache_read_tokens) == (2000, 500)
    want = expected_cost("gemini", "gemini-2.5-flash", USAGE)
    assert want > 0 and records[0].cost_usd == pytest.approx(want)
    assert records[1].cost_usd == pytest.approx(want)
    sent = fake.requests[-1]
    assert sent.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert sent.headers["x-goog-api-key"] == REAL_GEMINI_KEY
    assert "authorization" not in sent.headers and "x-api-key" not in sent.headers
    secret = gateway.issue_secret("gemini")
    assert gemini_call(gateway, "count", secret=secret).status_code == 200
    assert secret not in json.dumps([r.headers for r in fake.requests])  # never forwarded


def test_gemini_path_refuses_a_wrong_secret_and_a_key_in_the_query(gateway, fake):
    gateway.issue_secret("gemini")
    wrong = gemini_call(gateway, "count", secret="omk-not-the-secret")
    assert wrong.status_code == 401
    base = gateway.base_url_for("gemini", "gemini", tcp=True)
    in_query = httpx.post(
        f"{base}/v1beta/models/gemini-2.5-flash:generateContent?key={gateway.issue_secret('gemini')}",
        json={"contents": []},
    )
    assert in_query.status_code == 401  # a key in a URL ends up in logs: not accepted
    assert not fake.requests


def test_gemini_budget_cut_and_record_replay(gateway, fake, tmp_path):
    gateway.budget = Budget(limit_tokens=1000)
    cut = gemini_call(gateway, "long story")
    assert cut.status_code == 200
    last = sse_payloads(cut)[-1]
    assert last["error"]["details"][0]["reason"] == "budget_exceeded"
    assert "budget" in last["error"]["message"]
    gateway.budget = Budget()

    cassette = tmp_path / "g.cassette.jsonl"
    gateway.record_to(cassette)
    recorded = sse_payloads(gemini_call(gateway, "count"))
    settle(gateway)
    assert REAL_GEMINI_KEY not in cassette.read_text()
    fake.stop_thread()
    gateway.replay_from(cassette)
    assert sse_payloads(gemini_call(gateway, "count")) == recorded
    assert settle(gateway)[-1].cost_usd == 0
    refused = gemini_call(gateway, "something new")
    assert refused.status_code == 400
    assert refused.json()["error"]["status"] == "INVALID_ARGUMENT"


class _Redirecting(http.server.BaseHTTPRequestHandler):
    """An upstream that answers every call with a redirect to `target`, and a target that notes
    every request it gets (with its headers)."""

    target = ""
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.startswith("/elsewhere"):
            type(self).seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        self.send_response(307)
        self.send_header("location", self.target + "/elsewhere" + self.path)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_redirecting_upstream_never_gets_the_key_sent_on():
    """An upstream's redirect is not followed: following it would send the user's real key
    (the gateway adds it to every upstream call) to wherever the redirect points."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    _Redirecting.target = f"http://127.0.0.1:{server.server_address[1]}"
    _Redirecting.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gw = Gateway(
        {"anthropic": Upstream("anthropic", _Redirecting.target, REAL_ANTHROPIC_KEY)}
    ).start_in_thread()
    try:
        response = httpx.post(
            gw.base_url_for("claude", "anthropic", tcp=True) + "/v1/messages",
            headers={"x-api-key": gw.issue_secret("claude")},
            json={"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": []},
            timeout=30,
        )
        assert response.status_code == 307  # the harness sees the upstream's answer
        assert _Redirecting.seen == []  # and nothing, let alone the key, went elsewhere
    finally:
        gw.stop_thread()
        server.shutdown()
        server.server_close()
