"""Budgets and pauses in tokens, and the usage limits upstreams report in their headers.

Pure tables for the amounts, the rules and the header reading; the gateway with a real SDK
client against the fake model; then the real Claude Code CLI in a real kernel: a token budget
holds the next call and cuts a stream past it, a token `pause-every` pauses at each multiple
and goes on when approved, bad units are clear errors, and `%spend` and the spend gauge show the
tokens and the plan's usage limits.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import anthropic
import openai
import pytest

from omnikernel.events import Event, EventKind
from omnikernel.gateway import Budget, Gateway, SpendRecord, read_limits
from omnikernel.gateway.upstream import Upstream, UpstreamConfig
from omnikernel.kernel.widgets import SpendGauge
from omnikernel.policy import fold
from omnikernel.policy.amounts import TOKENS, USD, Amount, AmountError, counted_tokens, parse_amount
from omnikernel.policy.config import load_file
from omnikernel.policy.engine import judge
from omnikernel.policy.rule import Outcome, PolicyState, Request, RuleError
from omnikernel.policy.rules import make_rule
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.session.core import AgentSession
from omnikernel.store.sessions import SessionStore

from .conftest import require_claude
from .test_credentials import FRESH, write_claude_login
from .test_kernel_control import run_and_answer

# -- amounts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("5", Amount(5.0, USD)), ("$5", Amount(5.0, USD)), ("5.50 usd", Amount(5.5, USD)),
    ("$ 0.25", Amount(0.25, USD)), (3, Amount(3.0, USD)),
    ("2M tokens", Amount(2e6, TOKENS)), ("500k tok", Amount(5e5, TOKENS)),
    ("1.5M tokens", Amount(1.5e6, TOKENS)), ("1_000_000 tokens", Amount(1e6, TOKENS)),
    ("2,000 token", Amount(2000.0, TOKENS)), ("3m TOKENS", Amount(3e6, TOKENS)),
    ("1B tokens", Amount(1e9, TOKENS)),
])  # fmt: skip
def test_amounts_are_read_in_usd_or_tokens(text, expected):
    assert parse_amount(text) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("2M", "has no unit; say 2M tokens for tokens"),
    ("5 euros", "unknown unit 'euros'"),
    ("-3", "must be positive"), ("0 tokens", "must be positive"), ("0", "must be positive"),
    ("1.5 tokens", "whole number of tokens"),
    ("$2 tokens", "mixes $ and tokens"), ("$2M", "k/M multipliers are for tokens"),
    ("lots", "must be a number of USD ($5, 5 usd) or tokens (2M tokens, 500k tok)"),
    ("", "must be a number"), (True, "must be a number"),
])  # fmt: skip
def test_bad_amounts_say_what_to_type(text, says):
    with pytest.raises(AmountError, match=re.escape(says)):
        parse_amount(text)


def test_amounts_show_and_key_apart():
    assert Amount(2e6, TOKENS).show() == "2M tokens" and Amount(2.5, USD).show() == "$2.50"
    assert Amount(1234.0, TOKENS).words() == "1,234 tokens" and Amount(5.0).words() == "5"
    assert Amount(5.0).key == 5.0 and Amount(5.0, TOKENS).key == "5 tokens"


def test_cache_reads_do_not_count_toward_a_token_budget():
    record = SpendRecord("claude", "anthropic", "m", 100, 20, 5000, 300, 0.1)
    assert counted_tokens(record) == record.tokens == 420  # input + cache writes + output
    assert counted_tokens(record.to_dict()) == 420


def test_a_token_budget_is_reached_apart_from_the_usd_one():
    budget = Budget(limit_tokens=1000)
    assert budget.active and not budget.exceeded(99.0, tokens=999)  # no USD cap: dollars pass
    assert budget.exceeded(0.0, tokens=900, pending_tokens=100)
    assert "1,000 tokens metered of the 1k tokens session budget" in budget.message(0.0, 1000)
    assert "%budget N tokens" in budget.message(0.0, 1000)
    both = Budget(limit_usd=1.0, limit_tokens=10**6)
    assert both.reached(1.0, tokens=5) == Amount(1.0, USD)
    assert both.reached(0.5, tokens=10**6) == Amount(1e6, TOKENS)


# -- rules -----------------------------------------------------------------------------------


def spend(input_tokens: int, output_tokens: int = 0, cache_read: int = 0) -> Event:
    return Event(
        EventKind.SPEND,
        {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_tokens": cache_read,
            "cost_usd": 0.0,
        },
    )


def test_a_token_pause_every_pauses_at_each_multiple_and_goes_on_when_approved():
    rule = make_rule("pause-every", ["1k", "tokens"], "session")
    assert rule.describe() == "pause-every 1k tokens"
    model_call = Request(kind="model_call")
    state = fold([spend(600, 300, cache_read=50_000)])  # cache reads do not count
    assert state.spent_tokens == 900 and judge([rule], state, model_call).outcome == Outcome.ALLOW
    state = fold([spend(100, 50)], state)
    verdict = judge([rule], state, model_call)
    assert verdict.outcome == Outcome.PAUSE and verdict.pause_marks == [["1000 tokens", 1]]
    assert "1,050 tokens, past 1k tokens" in verdict.reason
    approved = Event(
        EventKind.APPROVAL_DECISION, {"decision": "allow", "pause_marks": verdict.pause_marks}
    )
    state = fold([approved], state)
    assert judge([rule], state, model_call).outcome == Outcome.ALLOW  # approved: goes on
    assert rule.state_text(state) == "1,050 tokens metered; next pause at 2k tokens"
    state = fold([spend(1000)], state)  # 2,050: the next multiple pauses again
    assert judge([rule], state, model_call).pause_marks == [["1000 tokens", 2]]
    # A USD pause of the same number is a different pause.
    usd = make_rule("pause-every", ["1000"], "session")
    assert judge([usd], state, model_call).outcome == Outcome.ALLOW


def test_a_token_budget_rule_denies_past_its_cap():
    rule = make_rule("budget", ["2M tokens"], "user")
    assert rule.check(Request(), PolicyState(spent_tokens=1_999_999)) is None
    match = rule.check(Request(), PolicyState(spent_tokens=2_000_000, spent_usd=0.0))
    assert match is not None and match.outcome == Outcome.DENY and "2M tokens" in match.reason


def test_a_policy_files_budget_refuses_model_calls_and_says_where_it_lives(tmp_path: Path):
    user = tmp_path / "user.toml"
    user.write_text('[[rule]]\nrule = "budget"\namount = "1k tokens"\n')
    session = AgentSession(
        store=SessionStore(tmp_path / "s.sqlite3"),
        session_id="b",
        notebook=str(tmp_path / "n"),
        cwd=tmp_path,
        state_dir=tmp_path / "state",
        upstream_config=UpstreamConfig(),
        user_policy=user,
        budget_tokens=500,
    )
    try:
        assert asyncio.run(session._hold_model_call("claude")) is None  # nothing spent yet
        session.gateway.ledger.add(
            SpendRecord("claude", "anthropic", "claude-sonnet-4-5", 900, 300, 0, 0, 0.01)
        )
        refusal = asyncio.run(session._hold_model_call("claude"))
        assert refusal is not None and "policy refused this model call" in refusal
        assert "1k tokens budget is used" in refusal and "user policy rule" in refusal
        user.write_text("")
        session.policy.reload()
        # `%budget`'s own cap (500 tokens, passed too) stays the gateway's check, with its 402.
        assert asyncio.run(session._hold_model_call("claude")) is None
        assert session.gateway.budget_refusal() is not None
    finally:
        session.gateway.stop_thread()


@pytest.mark.parametrize(("args", "says"), [
    (["2M"], "has no unit"), (["5", "euros"], "unknown unit"), (["x"], "must be a number"),
    ([], "pause-every takes AMOUNT"),
    ({"usd": 5, "tokens": 9}, "takes one of usd = N, tokens = N"),
    ({"every": 5}, "not every"), ({"usd": "2M tokens"}, "write tokens = ..."),
    ({"tokens": "1.5"}, "whole number of tokens"),
])  # fmt: skip
def test_bad_pause_amounts_are_clear_rule_errors(args, says):
    with pytest.raises(RuleError, match=re.escape(says)):
        make_rule("pause-every", args, "session")


def test_policy_files_take_tokens(tmp_path: Path):
    path = tmp_path / "policy.toml"
    path.write_text(
        '[[rule]]\nrule = "pause-every"\ntokens = "1M"\n\n'
        '[[rule]]\nrule = "pause-every"\ntokens = 250000\n\n'
        '[[rule]]\nrule = "budget"\namount = "5M tokens"\n\n'
        '[[rule]]\nrule = "pause-every"\nusd = 5\n'
    )
    loaded = load_file(path, "user")
    assert [r.describe() for r in loaded.rules] == [
        "pause-every 1M tokens",
        "pause-every 250k tokens",
        "budget 5M tokens",
        "pause-every 5",
    ]


# -- usage limits from response headers -----------------------------------------------------------

NOW = 1_790_000_000.0
CLAUDE_PLAN = {
    "anthropic-ratelimit-unified-status": "allowed_warning",
    "anthropic-ratelimit-unified-representative-claim": "five_hour",
    "anthropic-ratelimit-unified-5h-utilization": "0.42",
    "anthropic-ratelimit-unified-5h-reset": str(int(NOW + 2 * 3600 + 180)),
    "anthropic-ratelimit-unified-7d-utilization": "0.3",
    "anthropic-ratelimit-unified-7d-reset": str(int(NOW + 3 * 86400)),
    "Content-Type": "text/event-stream",
}
CODEX_PLAN = {
    "x-codex-primary-used-percent": "12.5", "x-codex-primary-window-minutes": "300",
    "x-codex-primary-reset-at": str(int(NOW + 600)), "x-codex-secondary-used-percent": "64",
    "x-codex-secondary-window-minutes": "10080", "x-codex-secondary-reset-after-seconds": "3600",
    "x-codex-credits-has-credits": "false", "x-codex-credits-unlimited": "true",
}  # fmt: skip
API_KEYS = {
    "anthropic-ratelimit-tokens-limit": "400000", "anthropic-ratelimit-tokens-remaining": "399000",
    "anthropic-ratelimit-tokens-reset": "2026-09-17T09:13:32Z",
    "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
    "x-ratelimit-reset-requests": "120ms",
}  # fmt: skip


def test_plan_usage_limits_are_read_from_the_headers():
    claude = read_limits(CLAUDE_PLAN, "claude plan")
    assert claude is not None and claude.status == "allowed_warning"
    text = claude.text(NOW)
    assert "5-hour 42% used resets" in text
    assert "(in 2h 3m) (binding)" in text and "weekly 30% used" in text and "(in 3d 0h)" in text
    assert "status allowed warning" in text and claude.most_used is not None
    assert claude.most_used.name == "5-hour" and "content-type" not in claude.headers
    codex = read_limits(CODEX_PLAN, "chatgpt")
    assert codex is not None
    text = codex.text(NOW)
    assert "5-hour 12% used" in text and "weekly 64% used" in text and "credits unlimited" in text
    keys = read_limits(API_KEYS)
    assert keys is not None
    text = keys.text(NOW)
    assert "tokens 399000 of 400000 left" in text and "requests 499 of 500 left" in text
    assert "resets in 120ms" in text
    assert read_limits({"content-type": "application/json"}) is None


# -- the gateway -------------------------------------------------------------------------------

STORY = "tale " * 400
SCENARIO = Scenario.from_dict({"rules": [
    {"match": "count", "steps": [{"text": "counted", "usage": {
        "input_tokens": 2000, "output_tokens": 300, "cache_read_tokens": 50_000}}]},
    {"match": "long story", "steps": [{"text": STORY, "chunk_delay": 0.01,
                                       "usage": {"input_tokens": 10, "output_tokens": 500}}]},
]})  # fmt: skip


@pytest.fixture
def fake():
    with FakeModelServer(SCENARIO).start_in_thread() as server:
        yield server


@pytest.fixture
def gateway(fake):
    gw = Gateway(
        {
            "anthropic": Upstream("anthropic", fake.base_url, "k-anthropic"),
            "openai": Upstream("openai", fake.base_url + "/v1", "k-openai"),
        }
    ).start_in_thread()
    yield gw
    gw.stop_thread()


def settle(gw: Gateway) -> None:
    deadline = time.monotonic() + 5
    while gw.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)


def claude(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gw.base_url_for("claude", "anthropic", tcp=True),
        api_key=gw.issue_secret("claude"),
        max_retries=0,
    )


def ask(client: anthropic.Anthropic, prompt: str = "count") -> None:
    client.messages.create(
        model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": prompt}]
    )


def test_a_token_budget_holds_the_next_call_until_raised(gateway, fake):
    gateway.budget.limit_tokens = 2000
    client = claude(gateway)
    ask(client)  # under the cap when it starts: answered (2,300 tokens counted)
    settle(gateway)
    assert gateway.spent_tokens == 2300  # the 50,000 cache reads do not count
    seen = len(fake.requests)
    with pytest.raises(anthropic.APIStatusError) as err:
        ask(client)
    assert err.value.status_code == 402
    assert "2,300 tokens metered of the 2k tokens session budget" in str(err.value)
    assert "%budget N tokens" in str(err.value)
    assert len(fake.requests) == seen  # held at the gateway: nothing went upstream
    gateway.budget.limit_tokens = 10_000  # raised: the session goes on
    ask(client)
    # The same hold on the OpenAI wire.
    gateway.budget.limit_tokens = 100
    codex = openai.OpenAI(
        base_url=gateway.base_url_for("codex", "openai", tcp=True),
        api_key=gateway.issue_secret("codex"),
        max_retries=0,
    )
    with pytest.raises(openai.APIStatusError) as err2:
        codex.responses.create(model="gpt-5.5", input="count")
    assert err2.value.status_code == 402 and "tokens" in str(err2.value)


def test_a_token_budget_cuts_a_stream_that_crosses_it(gateway):
    gateway.budget.limit_tokens = 150  # 10 input + ~140 output tokens (~560 characters)
    received: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as err:
        with claude(gateway).messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=5,
            messages=[{"role": "user", "content": "a long story"}],
        ) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert "tokens session budget" in str(err.value)
    streamed = "".join(received)
    assert 0 < len(streamed) < len(STORY) and len(streamed) <= 150 * 4 + 40  # cut near the cap
    settle(gateway)
    (record,) = gateway.ledger.records
    assert record.estimated and 150 <= record.tokens < 170


def test_the_latest_usage_limits_are_kept_per_upstream(gateway, fake):
    fake.extra_headers = dict(API_KEYS)
    client = claude(gateway)
    ask(client)
    fake.extra_headers = {**API_KEYS, "anthropic-ratelimit-tokens-remaining": "397000"}
    ask(client)
    settle(gateway)
    (limits,) = gateway.latest_limits().values()
    assert limits.upstream == fake.base_url and limits.harnesses == {"claude"}
    assert "tokens 397000 of 400000 left" in limits.text()  # the latest answer's, not merged


# -- the session's gauge -------------------------------------------------------------------------


def test_the_gauge_shows_tokens_and_usage_limits(tmp_path: Path):
    session = AgentSession(
        store=SessionStore(tmp_path / "s.sqlite3"),
        session_id="g",
        notebook=str(tmp_path / "n"),
        cwd=tmp_path,
        state_dir=tmp_path / "state",
        upstream_config=UpstreamConfig(),
        budget_tokens=10_000,
        user_policy=tmp_path / "none.toml",
    )
    try:
        gauge = SpendGauge(session)
        assert gauge.token_bar.layout.display is None and gauge.token_bar.max == 10_000
        record = SpendRecord(
            "claude", "anthropic", "claude-sonnet-4-5", 3000, 500, 9000, 0, 0.1, plan=True
        )
        session.gateway.ledger.add(record)
        session.gateway.saw_limits(
            "claude", Upstream("anthropic", "https://api.anthropic.com", "x"), CLAUDE_PLAN
        )
        gauge.refresh()
        assert gauge.token_bar.value == 3500 and "3,500 tokens of 10,000" in gauge.token_label.value
        assert "budget 10k tokens" in gauge.text() and "3,500 tokens" in gauge.text()
        assert "plan, API-equivalent $0.1000" in gauge.rows.value
        assert (
            gauge.limit_bar.value == pytest.approx(42.0) and gauge.limit_bar.layout.display is None
        )
        assert "claude: 5-hour 42% used" in gauge.limit_label.value
        assert "5-hour 42% used" in gauge.limits.value and "weekly 30% used" in gauge.text()
        session.budget.limit_tokens = None
        session.policy.add("pause-every", ["2k", "tokens"])
        gauge.refresh()
        assert "next pause at 4k tokens" in gauge.text() and gauge.token_bar.max == 4000
        assert session.spend_line() == "next pause at 4k tokens"
    finally:
        session.gateway.stop_thread()


# -- the kernel, with the real Claude Code -------------------------------------------------------

KERNEL_SCENARIO = {"rules": [
    {"match": "create the notes file", "steps": [
        {"text": "Writing.", "tool_calls": [{"action": "shell", "command": "echo kept > notes.txt"}],
         "usage": {"input_tokens": 2000, "output_tokens": 80}},
        {"text": "Created notes.txt.", "usage": {"input_tokens": 2000, "output_tokens": 80}},
    ]},
    {"match": "which file", "steps": [{"text": "Earlier I created notes.txt.",
                                       "usage": {"input_tokens": 2000, "output_tokens": 80}}]},
    {"match": "epic", "steps": [{"text": "saga " * 3000, "chunk_delay": 0.005,
                                 "usage": {"input_tokens": 10, "output_tokens": 4000}}]},
]}  # fmt: skip


def test_token_budget_in_the_kernel_with_a_plan_login(workdir, start_kernel, tmp_path):
    require_claude()
    host_config = tmp_path / "host-claude"
    write_claude_login(host_config, FRESH)
    with FakeModelServer(Scenario.from_dict(KERNEL_SCENARIO), api_key=FRESH) as fake:
        fake.extra_headers = {k: v for k, v in CLAUDE_PLAN.items() if k != "Content-Type"}
        kernel = start_kernel(
            workdir,
            ANTHROPIC_BASE_URL=fake.base_url,
            OMNIKERNEL_CREDENTIALS="claude=login",
            CLAUDE_CONFIG_DIR=str(host_config),
            OMNIKERNEL_MODEL="claude-sonnet-4-5",
            OMNIKERNEL_AUTO_APPROVE="1",
        )
        # Bad units are clear errors, and the kernel stays alive.
        for line, says in (
            ("%budget 2M", "has no unit; say 2M tokens"),
            ("%budget 5 euros", "unknown unit 'euros'"),
            ("%budget -1 tokens", "must be positive"),
            ("%policy add pause-every 3 parsecs", "unknown unit 'parsecs'"),
        ):
            bad = kernel.execute(line)
            assert bad.status == "error" and says in bad.text, (line, bad.text)
        assert kernel.execute("%%python\nprint(6 * 7)").text.strip() == "42"

        set_cap = kernel.execute("%budget 1000 tokens")
        assert "Budget 1k tokens: 0 tokens metered" in set_cap.text
        assert "cache reads do not count" in set_cap.text
        # A stream that crosses the cap is cut mid-way, with the budget's message.
        cut = kernel.execute("Tell me an epic.", timeout=120)
        assert cut.status == "error" and "tokens session budget" in cut.text, cut.text
        streamed = "".join(m["content"]["text"] for m in cut.outputs if m["msg_type"] == "stream")
        sagas = max(
            [m["content"].get("data", {}).get("text/plain", "").count("saga") for m in cut.outputs]
            + [streamed.count("saga")]
        )
        assert 0 < sagas < 3000
        # Past the cap, the next call is held at the gateway: nothing goes upstream.
        posts = len([r for r in fake.requests if r.path == "/v1/messages"])
        held = kernel.execute("Which file did you create?", timeout=120)
        assert held.status == "error" and "tokens session budget" in held.text, held.text
        assert len([r for r in fake.requests if r.path == "/v1/messages"]) == posts
        # Raised, the session goes on; the footer shows the session against the cap.
        assert "Budget 1M tokens" in kernel.execute("%budget 1M tokens").text
        again = kernel.execute("Which file did you create?", timeout=120)
        assert again.status == "ok", again.text
        assert re.search(r"session [\d,]+ tokens of 1M tokens budget", again.text), again.text
        assert "plan (API-equivalent $" in again.text

        spend = kernel.execute("%spend")
        assert re.search(
            r"Session total: \$[\d.]+ \(calls on a plan login .*\) · [\d,]+ tokens "
            r"\(input \+ cache writes \+ output\)",
            spend.text,
        ), spend.text
        assert "budget 1M tokens" in spend.text  # the gauge's text
        # The plan's usage limits, as the upstream reported them, in %spend and the gauge.
        assert "Usage limits of" in spend.text and "(claude)" in spend.text
        assert "5-hour 42% used" in spend.text and "(binding)" in spend.text
        assert "weekly 30% used" in spend.text and "status allowed warning" in spend.text
        assert "claude limits: 5-hour 42% used" in spend.text
        off = kernel.execute("%budget off tokens")
        assert "No budget" in off.text


def test_a_token_pause_every_pauses_in_the_kernel_and_goes_on(workdir, start_kernel):
    require_claude()
    with FakeModelServer(Scenario.from_dict(KERNEL_SCENARIO)).start_in_thread() as fake:
        kernel = start_kernel(
            workdir,
            ANTHROPIC_BASE_URL=fake.base_url,
            ANTHROPIC_API_KEY="k",
            OMNIKERNEL_MODEL="claude-sonnet-4-5",
            OMNIKERNEL_AUTO_APPROVE="1",
        )
        added = kernel.execute("%policy add pause-every 1.5k tokens")
        assert "Added pause-every 1.5k tokens (session level)" in added.text, added.text
        # Each call counts 2,080 tokens: the first crosses 1,500, so the next action pauses.
        first = run_and_answer(kernel, "Please create the notes file.", ["Continue"])
        assert first.status == "ok", first.text
        assert "PAUSED" in first.text and "pause-every 1.5k tokens" in first.text
        assert "past 1.5k tokens" in first.text and (workdir / "notes.txt").exists()
        # 4,160 tokens: past 3,000, so the next model call waits at the gateway.
        second = run_and_answer(kernel, "Which file did you create?", ["Continue"])
        assert second.status == "ok", second.text
        assert "pause: continued" in second.text and "past 3k tokens" in second.text
        assert "Earlier I created notes.txt" in second.text
        assert "next pause at 7.5k tokens" in second.text  # the footer: 6,240 metered
        listed = kernel.execute("%policy")
        assert "6,240 tokens metered; next pause at 7.5k tokens" in listed.text, listed.text
