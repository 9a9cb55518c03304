"""Faults: the upstream failing for a while or for good, the harness or the kernel killed
mid-turn, the store unusable. Each ends in a clear message, and no stored event is lost
(sequence numbers stay continuous)."""

from __future__ import annotations

import socket
import time

import anthropic
import openai
import pytest

from omnikernel.gateway import Gateway
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.upstream import Upstream

OVERLOADED = {"error": {"status": 529, "type": "overloaded_error", "message": "Overloaded"}}
RATE_LIMITED = {"error": {"status": 429, "type": "rate_limit_error", "message": "slow down"}}
SERVER_ERROR = {"error": {"status": 500, "type": "api_error", "message": "boom"}}
SCENARIO = Scenario.from_dict({"rules": [{"match": "hello", "steps": [{"text": "fine: {prompt}"}]}]})


@pytest.fixture
def fake():
    with FakeModelServer(SCENARIO).start_in_thread() as server:
        yield server


def gateway_to(base_url: str) -> Gateway:
    gw = Gateway({
        "anthropic": Upstream("anthropic", base_url, "sk-ant-real"),
        "openai": Upstream("openai", base_url + "/v1", "sk-openai-real"),
    })  # fmt: skip
    gw.backoff_s = 0.05
    return gw.start_in_thread()


def claude_client(gw: Gateway) -> anthropic.Anthropic:
    # max_retries=0: what the harness sees is what the gateway gives, no SDK retry hides it.
    return anthropic.Anthropic(base_url=gw.base_url_for("claude", "anthropic"),
                               api_key=gw.issue_secret("claude"), max_retries=0)  # fmt: skip


def model_calls(fake: FakeModelServer) -> int:
    return len([r for r in fake.requests if r.path.endswith("/messages")])


@pytest.mark.parametrize("error", [OVERLOADED, RATE_LIMITED, SERVER_ERROR], ids=["529", "429", "500"])
def test_gateway_retries_a_failing_upstream_then_the_answer_arrives(fake, error):
    gw = gateway_to(fake.base_url)
    try:
        for stream in (False, True):
            fake.enqueue(error, error)  # two failures, then the scenario answers
            before = model_calls(fake)
            client = claude_client(gw)
            kwargs = {"model": "claude-sonnet-4-5", "max_tokens": 100,
                      "messages": [{"role": "user", "content": "hello"}]}  # fmt: skip
            if stream:
                with client.messages.stream(**kwargs) as s:
                    text = s.get_final_text()
            else:
                text = client.messages.create(**kwargs).content[0].text
            assert text == "fine: hello"
            assert model_calls(fake) - before == 3  # two refused, the third answered
    finally:
        gw.stop_thread()


def test_gateway_gives_up_after_bounded_retries_naming_the_upstream(fake):
    fake.enqueue(*[OVERLOADED] * 10)
    gw = gateway_to(fake.base_url)
    try:
        started = time.monotonic()
        with pytest.raises(anthropic.APIStatusError) as raised:
            claude_client(gw).messages.create(
                model="claude-sonnet-4-5", max_tokens=10,
                messages=[{"role": "user", "content": "hello"}],
            )  # fmt: skip
        assert raised.value.status_code == 529
        message = str(raised.value)
        assert fake.base_url.split("//")[1] in message and "4 attempt(s)" in message
        assert "Overloaded" in message and "try the cell again later" in message
        assert model_calls(fake) == 4  # 1 + gw.retries, not more
        assert time.monotonic() - started < 5  # backoff 0.05, 0.1, 0.2: bounded
    finally:
        gw.stop_thread()


def test_gateway_retry_honours_retry_after_within_its_cap():
    gw = Gateway({})
    assert gw.backoff(1) == 0.5 and gw.backoff(3) == 2.0
    assert gw.backoff(1, "3") == 3.0
    assert gw.backoff(1, "3600") == gw.max_backoff_s  # a long Retry-After is capped
    assert gw.backoff(2, "soon") == 1.0  # unreadable: the doubling


def test_gateway_reports_an_unreachable_upstream_by_name():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gw = gateway_to(f"http://127.0.0.1:{port}")
    try:
        client = openai.OpenAI(base_url=gw.base_url_for("codex", "openai"),
                               api_key=gw.issue_secret("codex"), max_retries=0)  # fmt: skip
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}])
        assert raised.value.status_code == 502
        message = str(raised.value)
        assert f"127.0.0.1:{port}" in message and "did not answer" in message
        assert "4 attempt(s)" in message and "reachable" in message
    finally:
        gw.stop_thread()
