"""Redaction: what a known credential looks like wherever an agent might print it, and the places
that must never hold one (the store, an approval card, a streamed answer, a log line, a
cassette)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import urllib.parse
from pathlib import Path

import pytest

from omnikernel import events as ev
from omnikernel.events import Event, EventKind
from omnikernel.gateway.cassette import CassetteRecorder, Exchange
from omnikernel.gateway.upstream import UpstreamConfig
from omnikernel.session.core import AgentSession
from omnikernel.store.redact import MIN_LENGTH, LogFilter, Redactor, label_text
from omnikernel.store.sessions import SessionStore

SECRET = "omk-Zx81_q-Pw3RtY7uVbN0cLm5KjH2gFdS4aQeW9iOo6p"
LABEL = "[redacted: gateway secret]"


@pytest.fixture
def redactor() -> Redactor:
    r = Redactor()
    assert r.add(SECRET, "gateway secret")
    return r


def b64(raw: str) -> str:
    return base64.b64encode(raw.encode()).decode()


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        (f"ANTHROPIC_API_KEY={SECRET}\nHOME=/h", f"ANTHROPIC_API_KEY={LABEL}\nHOME=/h"),
        (f"{SECRET}{SECRET}", LABEL * 2),
        (f"x-api-key: {SECRET}", f"x-api-key: {LABEL}"),
        ("nothing secret here", "nothing secret here"),
        ("omk-Zx81_q", "omk-Zx81_q"),  # a part alone is not the secret
    ],
)
def test_the_exact_value_is_replaced_by_its_label(redactor, shown, expected):
    assert redactor.text(shown) == expected


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param(lambda s: "https://h/?key=" + urllib.parse.quote(s, safe=""), id="percent"),
        pytest.param(lambda s: json.dumps(json.dumps({"k": s})), id="json-twice"),
        pytest.param(lambda s: "Basic " + b64(f"user:{s}"), id="basic-auth"),
        pytest.param(lambda s: b64(s + "\n"), id="echo-base64"),
        pytest.param(lambda s: b64(s), id="base64"),
        pytest.param(lambda s: b64("ab" + s + "tail"), id="base64-offset-2"),
        pytest.param(
            lambda s: base64.urlsafe_b64encode(b"\xff" + s.encode()).decode(), id="urlsafe-offset-1"
        ),  # fmt: skip
    ],
)
def test_common_encodings_are_recognised(redactor, encoded):
    shown = encoded(SECRET)
    clean = redactor.text(shown)
    assert LABEL in clean
    # What is left of an encoding carries no more than a character or two of the value.
    for form in (SECRET, b64(SECRET)[4:-4], urllib.parse.quote(SECRET, safe="")):
        assert form not in clean


def test_an_awkward_value_is_recognised_json_escaped_and_percent_encoded():
    value = 'pa"ss\\wo/rd+=1'
    r = Redactor()
    r.add(value, "proxy password")
    assert r.text(json.dumps({"p": value})) == '{"p": "[redacted: proxy password]"}'
    assert "[redacted: proxy password]" in r.text(urllib.parse.quote(value, safe=""))


def test_short_values_are_refused_so_ordinary_text_is_never_mangled():
    r = Redactor()
    assert not r.add("x" * (MIN_LENGTH - 1), "short")
    assert not r.add("", "empty")
    assert len(r) == 0
    assert r.text("xxxxxxx and more") == "xxxxxxx and more"
    assert r.add("y" * MIN_LENGTH, "long enough")


def test_event_data_is_redacted_recursively_keys_included(redactor):
    data = {"output": f"K={SECRET}", "input": {"env": [SECRET, 3, None, {SECRET: True}]}, "n": 1.5}
    clean = redactor.data(data)
    assert clean == {
        "output": f"K={LABEL}",
        "input": {"env": [LABEL, 3, None, {LABEL: True}]},
        "n": 1.5,
    }
    assert data["output"] == f"K={SECRET}"  # the original is left alone


def test_the_longest_known_value_wins_and_labels_say_which():
    r = Redactor()
    r.add("sk-ant-abcdefgh", "ANTHROPIC_API_KEY")
    r.add("sk-ant-abcdefgh-and-more", "claude login")
    assert r.text("a sk-ant-abcdefgh-and-more b sk-ant-abcdefgh") == (
        "a [redacted: claude login] b [redacted: ANTHROPIC_API_KEY]"
    )


def test_forget_and_watch_follow_what_the_kernel_knows():
    r = Redactor()
    r.add("first-secret-value", "one")
    r.forget("first-secret-value")
    assert r.text("first-secret-value") == "first-secret-value"
    tokens = ["access-token-0001"]
    r.watch("claude login", lambda: tokens)
    assert r.text("access-token-0001") == label_text("claude login")
    tokens[0] = "access-token-0002"  # the gateway refreshed the login
    assert r.text("access-token-0002 access-token-0001") == (
        label_text("claude login") + " access-token-0001"
    )


@pytest.mark.parametrize("pieces", [2, 3, 7, len(SECRET) + 20])
def test_a_value_split_over_streamed_deltas_is_caught(redactor, pieces):
    whole = f"Your key is {SECRET}, and the other one is {SECRET}. Done."
    size = -(-len(whole) // pieces)
    for offset in range(0, size, max(1, size // 5)):
        cuts = [whole[:offset]] + [whole[i : i + size] for i in range(offset, len(whole), size)]
        stream = redactor.stream()
        shown = [stream.feed(c) for c in cuts] + [stream.flush()]
        assert "".join(shown) == redactor.text(whole)
        assert all(SECRET[:12] not in s for s in shown)


def test_a_stream_without_secrets_passes_through_and_holds_back_only_a_possible_start(redactor):
    stream = redactor.stream()
    assert stream.feed("hello wor") == "hello wor"
    assert stream.feed("ld, om") == "ld, "  # "om" may begin the secret
    assert stream.feed("elette") == "omelette"
    assert stream.feed("o") == ""
    assert stream.flush() == "o"
    assert Redactor().stream().feed("omk-") == "omk-"  # nothing known: nothing held


def test_the_store_never_holds_a_known_value(tmp_path: Path, redactor):
    store = SessionStore(tmp_path / "s.sqlite3", redactor=redactor)
    place = {"session_id": "s", "harness": "claude", "cell": "c"}
    start = store.start_turn(
        Event(EventKind.TURN_START, {"prompt": f"use {SECRET}"}).stamped(**place)
    )
    result = store.append(ev.tool_result("t1", f"ANTHROPIC_API_KEY={SECRET}").stamped(**place))
    decision, first = store.append_decision(
        Event(
            EventKind.APPROVAL_DECISION,
            {"request_id": "r1", "decision": "allow", "reason": f"ok {SECRET}"},
        ).stamped(**place)
    )
    assert first
    # What callers show is what was stored: redacted.
    assert start.data["prompt"] == f"use {LABEL}"
    assert result.data["output"] == f"ANTHROPIC_API_KEY={LABEL}"
    assert decision.data["reason"] == f"ok {LABEL}"
    assert [e.data for e in store.events("s")] == [start.data, result.data, decision.data]
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert SECRET.encode() not in raw and LABEL.encode() in raw


def test_a_store_without_a_redactor_keeps_events_as_they_are(tmp_path: Path):
    store = SessionStore(tmp_path / "s.sqlite3")
    stored = store.append(ev.text(SECRET).stamped(session_id="s"))
    assert stored.data["text"] == SECRET


def test_log_lines_are_redacted_message_arguments_and_traceback(redactor):
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(LogFilter(redactor))
    logger = logging.getLogger("omnikernel.test_redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("claude stderr: %s", f"key {SECRET}")
        logger.warning(f"not JSON: {SECRET!r}")
        try:
            raise RuntimeError(f"failed with {SECRET}")
        except RuntimeError:
            logger.exception("the harness said")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert SECRET not in text
    assert text.count(LABEL) == 3 and "RuntimeError: failed with" in text


def test_cassettes_redact_what_the_gateway_holds(tmp_path: Path):
    recorder = CassetteRecorder(tmp_path / "c.jsonl", ["sk-real-key-123456"])
    recorder.secrets.append(SECRET)  # what `Gateway.issue_secret` does while recording
    recorder.write(
        Exchange(
            "claude",
            "/v1/messages",
            0,
            "p",
            "m",
            200,
            "text/event-stream",
            [f"data: sk-real-key-123456 {SECRET}"],
            True,
        )
    )
    text = (tmp_path / "c.jsonl").read_text()
    assert "sk-real-key-123456" not in text and SECRET not in text
    assert text.count("[redacted: credential]") == 2


def session_for(tmp_path: Path, **config: str) -> AgentSession:
    return AgentSession(
        store=SessionStore(tmp_path / "s.sqlite3"),
        session_id="r",
        notebook=str(tmp_path / "n"),
        cwd=tmp_path,
        state_dir=tmp_path / "state",
        upstream_config=UpstreamConfig(**config),
        user_policy=tmp_path / "none.toml",
        approval_timeout_s=5,
    )


def test_the_session_teaches_the_store_every_credential_before_the_agent_starts(tmp_path: Path):
    session = session_for(
        tmp_path,
        anthropic_api_key="sk-ant-real-0123456789",
        anthropic_base_url="https://u:proxy-pass-9876@proxy.example",
    )
    try:
        assert session.redactor is session.store.redactor
        agent = session._harness("claude")  # the CLI is not started yet
        secret = agent.ctx.upstream.api_key
        shown = session.redactor.text(f"{secret} sk-ant-real-0123456789 proxy-pass-9876")
        assert shown == (
            "[redacted: gateway secret] [redacted: ANTHROPIC_API_KEY] "
            "[redacted: ANTHROPIC_BASE_URL password]"
        )
    finally:
        session.kill_now()


def test_an_approval_card_never_shows_a_known_value(tmp_path: Path):
    session = session_for(tmp_path)
    session.redactor.add(SECRET, "gateway secret")
    shown: list[dict] = []

    def present(pending):
        shown.append(pending.request)
        shown.append({"reason": pending.asked.reason})
        session.approvals.answer(pending.request_id, True, by="test", source="test")

    session.approvals.presenters.append(present)
    request = Event(
        EventKind.APPROVAL_REQUEST,
        {
            "request_id": "r1",
            "call_id": "c1",
            "tool": "Bash",
            "action": "exec",
            "summary": f"curl -H 'x-api-key: {SECRET}' https://example.com",
            "input": {"command": f"curl -H 'x-api-key: {SECRET}' https://example.com"},
        },
    )
    decision = asyncio.run(session._decide(request))
    assert decision.allow
    assert shown and SECRET not in json.dumps(shown) and LABEL in json.dumps(shown)


def test_streamed_text_is_recorded_whole_and_redacted(tmp_path: Path):
    session = session_for(tmp_path)
    session.redactor.add(SECRET, "gateway secret")
    stream = session.redactor.stream()
    deltas = ["The key is ", SECRET[:10], SECRET[10:30], SECRET[30:] + " ok", "!"]
    recorded = [
        e for d in deltas for e in session._record_streamed(stream, ev.text(d), "claude", "")
    ]
    recorded += session._record_streamed(stream, Event(EventKind.TURN_END, {}), "claude", "")
    texts = [e.data["text"] for e in recorded if e.kind == EventKind.TEXT]
    assert "".join(texts) == f"The key is {LABEL} ok!"
    assert recorded[-1].kind == EventKind.TURN_END
    assert SECRET[:12] not in json.dumps([e.data for e in session.store.events("r")])
