"""Faults: the upstream failing for a while or for good, the harness or the kernel killed
mid-turn, the store unusable. Each ends in a clear message, and no stored event is lost
(sequence numbers stay continuous)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sqlite3
import time
from pathlib import Path

import anthropic
import openai
import psutil
import pytest

from omnikernel.events import Event, EventKind
from omnikernel.gateway import Gateway
from omnikernel.gateway.upstream import Upstream, UpstreamConfig
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.session.core import AgentSession
from omnikernel.store.sessions import SessionStore, StoreUnavailableError

from .conftest import require_claude, require_cli

OVERLOADED = {"error": {"status": 529, "type": "overloaded_error", "message": "Overloaded"}}
RATE_LIMITED = {"error": {"status": 429, "type": "rate_limit_error", "message": "slow down"}}
SERVER_ERROR = {"error": {"status": 500, "type": "api_error", "message": "boom"}}
SCENARIO = Scenario.from_dict(
    {"rules": [{"match": "hello", "steps": [{"text": "fine: {prompt}"}]}]}
)


@pytest.fixture
def fake():
    with FakeModelServer(SCENARIO).start_in_thread() as server:
        yield server


def gateway_to(base_url: str) -> Gateway:
    gw = Gateway(
        {
            "anthropic": Upstream("anthropic", base_url, "sk-ant-real"),
            "openai": Upstream("openai", base_url + "/v1", "sk-openai-real"),
        }
    )
    gw.backoff_s = 0.05
    return gw.start_in_thread()


def claude_client(gw: Gateway) -> anthropic.Anthropic:
    # max_retries=0: what the harness sees is what the gateway gives, no SDK retry hides it.
    return anthropic.Anthropic(
        base_url=gw.base_url_for("claude", "anthropic", tcp=True),
        api_key=gw.issue_secret("claude"),
        max_retries=0,
    )


def model_calls(fake: FakeModelServer) -> int:
    return len([r for r in fake.requests if r.path.endswith("/messages")])


@pytest.mark.parametrize(
    "error", [OVERLOADED, RATE_LIMITED, SERVER_ERROR], ids=["529", "429", "500"]
)
def test_gateway_retries_a_failing_upstream_then_the_answer_arrives(fake, error):
    gw = gateway_to(fake.base_url)
    try:
        for stream in (False, True):
            fake.enqueue(error, error)  # two failures, then the scenario answers
            before = model_calls(fake)
            client = claude_client(gw)
            kwargs = {
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": "hello"}],
            }
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
                model="claude-sonnet-4-5",
                max_tokens=10,
                messages=[{"role": "user", "content": "hello"}],
            )
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
        client = openai.OpenAI(
            base_url=gw.base_url_for("codex", "openai", tcp=True),
            api_key=gw.issue_secret("codex"),
            max_retries=0,
        )
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(
                model="gpt-5", messages=[{"role": "user", "content": "hi"}]
            )
        assert raised.value.status_code == 502
        message = str(raised.value)
        assert f"127.0.0.1:{port}" in message and "did not answer" in message
        assert "4 attempt(s)" in message and "reachable" in message
    finally:
        gw.stop_thread()


# -- the kernel and its harness, with the real Claude Code CLI ---------------------------------

KERNEL_SCENARIO = {
    "rules": [
        # First: a handed-over history in the prompt holds the earlier prompts too.
        {"match": "which word", "steps": [{"text": "The word was heron."}]},
        {"match": "remember", "steps": [{"text": "Noted: the word is heron."}]},
        {"match": "slowly", "steps": [{"text": "word " * 200, "chunk_delay": 0.1}]},
        {"match": "think long", "steps": [{"text": "done at last", "delay": 60}]},
    ]
}


@pytest.fixture
def model():
    require_claude()
    with FakeModelServer(Scenario.from_dict(KERNEL_SCENARIO)).start_in_thread() as server:
        yield server


def env_for(model: FakeModelServer, **extra: str) -> dict[str, str]:
    return {
        "ANTHROPIC_BASE_URL": model.base_url,
        "ANTHROPIC_API_KEY": "test-key",
        "OMNIKERNEL_AUTO_APPROVE": "1",
        **extra,
    }


def stored(tmp_path: Path, session_id: str) -> list[Event]:
    store = SessionStore(tmp_path / "store" / "sessions.sqlite3")
    try:
        return list(store.events(session_id))
    finally:
        store.close()


def assert_continuous(events: list[Event]) -> None:
    """No stored event lost: sequence numbers 1..n without a gap; every turn ended once."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    starts = [e.turn for e in events if e.kind == EventKind.TURN_START]
    ends = [e.turn for e in events if e.kind == EventKind.TURN_END]
    assert sorted(starts) == sorted(ends) and len(set(ends)) == len(ends), (starts, ends)


def test_kernel_killed_mid_turn_marks_the_turn_interrupted_on_the_next_start(
    model, workdir, tmp_path, start_kernel
):
    env = env_for(model, OMNIKERNEL_SESSION_ID="survivor")
    first = start_kernel(workdir, **env)
    assert first.execute("Please remember a word.").status == "ok"
    first.kc.execute("Write slowly, please.")
    deadline = time.monotonic() + 60
    while not any(e.data.get("text", "").startswith("word") for e in stored(tmp_path, "survivor")):
        assert time.monotonic() < deadline, "the slow turn never streamed"
        time.sleep(0.2)
    kernel_pid = first.km.provisioner.pid
    orphans = psutil.Process(kernel_pid).children(recursive=True)
    os.kill(kernel_pid, signal.SIGKILL)  # no chance to store the turn's end
    first.km.provisioner.process.wait(10)
    for orphan in orphans:  # what the kernel started dies with its sandbox or here
        with contextlib.suppress(psutil.NoSuchProcess):
            orphan.kill()
    cut = stored(tmp_path, "survivor")
    assert [e.kind for e in cut].count(EventKind.TURN_END) == 1  # turn 2 was left open

    second = start_kernel(workdir, **env)
    after = second.execute("Which word did I ask you to remember?")
    assert after.status == "ok", after.text
    assert "Turn 2 (claude" in after.text and "was cut off" in after.text
    assert "The word was heron." in after.text
    events = stored(tmp_path, "survivor")
    assert_continuous(events)
    (end2,) = [e for e in events if e.kind == EventKind.TURN_END and e.turn == 2]
    assert end2.data["status"] == "interrupted" and end2.data["cut_off"] is True
    assert [e.turn for e in events if e.kind == EventKind.TURN_START] == [1, 2, 3]
    # What the cut turn streamed before the kill is kept.
    assert any(e.turn == 2 and e.kind == EventKind.TEXT for e in events)


def test_watchdog_ends_the_turn_of_a_harness_that_stops_answering(
    model, workdir, tmp_path, start_kernel
):
    kernel = start_kernel(
        workdir, **env_for(model, OMNIKERNEL_SESSION_ID="watched", OMNIKERNEL_WATCHDOG_S="10")
    )
    started = time.monotonic()
    result = kernel.execute("Please think long about it.", timeout=60)
    assert time.monotonic() - started < 40  # the model would answer only after 60 s
    assert result.status == "error"
    assert "sent nothing for 10 s: the watchdog ended the turn" in result.text
    assert kernel.alive()
    again = kernel.execute("Please remember a word.")
    assert again.status == "ok" and "heron" in again.text, again.text
    assert_continuous(stored(tmp_path, "watched"))


def test_a_locked_store_fails_the_cell_clearly_and_the_next_one_works(
    model, workdir, tmp_path, start_kernel
):
    kernel = start_kernel(workdir, **env_for(model, OMNIKERNEL_SESSION_ID="locked"))
    assert kernel.execute("Please remember a word.").status == "ok"
    other = sqlite3.connect(tmp_path / "store" / "sessions.sqlite3", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the kernel waits
    try:
        result = kernel.execute("Which word did I ask you to remember?", timeout=60)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert result.status == "error"
    assert "could not be written (database is locked)" in result.text
    assert "another process holds it locked" in result.text and "run the cell again" in result.text
    assert kernel.alive()
    again = kernel.execute("Which word did I ask you to remember?")
    assert again.status == "ok" and "heron" in again.text, again.text
    assert_continuous(stored(tmp_path, "locked"))


def test_a_full_disk_refuses_the_write_whole(tmp_path):
    store = SessionStore(tmp_path / "sessions.sqlite3")
    store.open_session("full", "n.ipynb")
    # SQLite's own page limit gives the same SQLITE_FULL a full disk does.
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    big = "x" * 2000
    with pytest.raises(StoreUnavailableError) as raised:
        for _ in range(100):
            store.append(Event(EventKind.TEXT, {"text": big}).stamped(session_id="full", turn=1))
    assert "the disk is full: free some space" in str(raised.value)
    assert "Nothing was half-written" in str(raised.value)
    events = list(store.events("full"))
    assert events and [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(e.data["text"] == big for e in events)
    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert (
        store.append(Event(EventKind.TEXT, {"text": "more"}).stamped(session_id="full")).seq
        == len(events) + 1
    )


def test_malformed_lines_from_a_harness_are_logged_and_the_turn_goes_on(model, tmp_path, caplog):
    """The real Claude Code CLI behind a wrapper that breaks its output: a garbage line before
    every real one, and a torn JSON line at the start."""
    claude = require_claude()
    work = tmp_path / "work"
    work.mkdir()
    wrapper = tmp_path / "bin" / "claude"
    wrapper.parent.mkdir()
    wrapper.write_text(
        "#!/bin/sh\n"
        'printf \'{"type": "system", "torn\n\'\n'
        f"'{claude}' \"$@\" | while IFS= read -r line; do\n"
        "  printf 'not json at all\\n%s\\n' \"$line\"\n"
        "done\n"
    )
    wrapper.chmod(0o755)
    store = SessionStore(tmp_path / "store.sqlite3")
    session = AgentSession(
        store=store,
        session_id="garbled",
        notebook=str(work / "g.ipynb"),
        cwd=work,
        state_dir=tmp_path / "state",
        harness="claude",
        auto_approve=True,
        harness_paths={"claude": str(wrapper)},
        readable=(wrapper.parent, Path(claude).parent.parent),
        upstream_config=UpstreamConfig(anthropic_base_url=model.base_url, anthropic_api_key="k"),
    )

    async def turns() -> list[list[Event]]:
        try:
            return [
                [e async for e in session.run_prompt(p)]
                for p in ("Please remember a word.", "Which word did I ask you to remember?")
            ]
        finally:
            await session.close()

    with caplog.at_level(logging.WARNING, logger="omnikernel"):
        first, second = asyncio.run(asyncio.wait_for(turns(), 120))
    assert first[-1].data["status"] == "completed", first
    assert "Noted: the word is heron." in "".join(e.data.get("text", "") for e in first)
    assert second[-1].data["status"] == "completed"
    assert "ignored a line that is not JSON: b'not json at all" in caplog.text
    assert_continuous(list(store.events("garbled")))


def test_claude_turn_rides_out_an_overloaded_upstream(model, workdir, tmp_path, start_kernel):
    """End to end: the upstream answers 529 twice; the gateway retries, and the real CLI's
    turn completes as if nothing happened."""
    kernel = start_kernel(workdir, **env_for(model, OMNIKERNEL_SESSION_ID="overloaded"))
    model.enqueue(OVERLOADED, OVERLOADED)
    result = kernel.execute("Please remember a word.")
    assert result.status == "ok", result.text
    assert "Noted: the word is heron." in result.text
    assert not model._queue  # both errors were served (and retried past)
    assert_continuous(stored(tmp_path, "overloaded"))


def test_pi_answers_the_next_prompt_after_the_upstream_failed_for_good(model, tmp_path):
    """The upstream fails past the gateway's retries: Pi's turn ends with the error, and the
    next prompt is answered, by the new turn (Pi's own retry would keep it busy, "already
    processing", and answer the old prompt late)."""
    require_cli("pi")
    work = tmp_path / "work"
    work.mkdir()
    session = AgentSession(
        store=SessionStore(tmp_path / "store.sqlite3"),
        session_id="pi-down",
        notebook=str(work / "p.ipynb"),
        cwd=work,
        state_dir=tmp_path / "state",
        harness="pi",
        auto_approve=True,
        upstream_config=UpstreamConfig(anthropic_base_url=model.base_url, anthropic_api_key="k"),
    )
    session.gateway.backoff_s = 0.05

    async def turns() -> tuple[list[Event], list[Event]]:
        try:
            model.enqueue(*[OVERLOADED] * 16)
            failed = [e async for e in session.run_prompt("Please remember a word.")]
            model.reset()
            await asyncio.sleep(3)  # past Pi's first retry delay (2 s), were it on
            after = [e async for e in session.run_prompt("Which word did I ask you to remember?")]
            return failed, after
        finally:
            await session.close()

    failed, after = asyncio.run(asyncio.wait_for(turns(), 180))
    assert failed[-1].data["status"] == "error", failed
    assert after[-1].data["status"] == "completed", after
    text = "".join(e.data.get("text", "") for e in after)
    assert "Noted: the word is heron." not in text  # nothing of the failed turn's retry


def test_a_short_soak_loses_no_event():
    """`make bench` runs 200 turns; here a bounded few over Claude Code, every fault kind."""
    require_claude()
    from benchmarks.soak import soak

    result = asyncio.run(soak(["claude"], turns=14, time_limit=240, seed=5))
    assert result["lost"] == 0 and result["seq_continuous"] and result["every_turn_ended_once"]
    assert result["faults"] >= 4 and result["survived"] == result["faults"], result


def test_gateway_access_log_stays_off_the_kernel_stderr(fake, caplog):
    """Error answers (here the 529s a retry rides out, and a final 529) once reached the
    kernel's stderr as `WARNING:tornado.access:...` lines."""
    fake.enqueue(*[OVERLOADED] * 4)
    gw = gateway_to(fake.base_url)
    try:
        with caplog.at_level(logging.INFO), pytest.raises(anthropic.APIStatusError):
            claude_client(gw).messages.create(
                model="claude-sonnet-4-5",
                max_tokens=10,
                messages=[{"role": "user", "content": "hello"}],
            )
    finally:
        gw.stop_thread()
    assert not [r for r in caplog.records if r.name == "tornado.access"]
