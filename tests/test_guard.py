"""Only the agent of a session can use that session's gateway (issue 16).

Each attack is what an outsider on the same machine can do: any local process, another user,
or a web page in the user's browser (a cross-origin ``text/plain`` POST needs no preflight; DNS
rebinding arrives with the attacker's host name). Every one is sent for real to a gateway on a
free loopback port in front of a fake upstream that counts what reaches it, and must get 401
with nothing upstream; the same request with the issued secret, from the agent, goes through,
so each refusal is shown to be the guard's doing.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import socket
import sqlite3
import stat
import tempfile
from pathlib import Path

import psutil
import pytest

from omnikernel.events import Event, EventKind
from omnikernel.gateway import Gateway, guard
from omnikernel.gateway.upstream import Upstream, UpstreamConfig
from omnikernel.rehearsal import FakeModelServer, Scenario
from omnikernel.sandbox import SandboxSpec, resolve, self_test, start_sandboxed
from omnikernel.sandbox.rundir import private_root
from omnikernel.session.core import AgentSession
from omnikernel.store.sessions import SessionStore

from .conftest import require_cli

REAL_KEY = "sk-ant-real-key-of-the-user-0016"
SCENARIO = Scenario.from_dict({"rules": [{"match": ".*", "steps": [{"text": "spent"}]}]})
BODY = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "spend the user's money"}]})  # fmt: skip


@pytest.fixture
def fake():
    with FakeModelServer(SCENARIO).start_in_thread() as server:
        yield server


@pytest.fixture
def gateway(fake):
    # On TCP, as for an agent started with `%sandbox off`: reachable by any local process.
    with Gateway(
        {
            "anthropic": Upstream("anthropic", fake.base_url, REAL_KEY),
            "openai": Upstream("openai", fake.base_url + "/v1", REAL_KEY),
        },
        tcp=True,
    ) as gw:
        yield gw


def send(
    port: int, path: str, headers: dict[str, str], method: str = "POST", body: str | None = BODY
) -> tuple[int, dict[str, str], bytes]:
    """One raw request with exactly these headers (``Host`` included: nothing is added)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    payload = body.encode() if body is not None else b""
    for name, value in {**headers, "Content-Length": str(len(payload))}.items():
        conn.putheader(name, value)
    conn.endheaders(payload)
    response = conn.getresponse()
    status, answer_headers = response.status, {k.lower(): v for k, v in response.getheaders()}
    try:
        answer = response.read()
    except ConnectionResetError:  # a server that refuses at the HTTP layer may close at once
        answer = b""
    conn.close()
    return status, answer_headers, answer


class UnixConnection(http.client.HTTPConnection):
    """HTTP over the unix socket at `path` (what a sandbox's bridge does)."""

    def __init__(self, path: Path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(self.path))


def send_unix(path: Path, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """One POST of `BODY` over the unix socket at `path`, with exactly these headers."""
    conn = UnixConnection(path)
    conn.putrequest("POST", url, skip_host=True, skip_accept_encoding=True)
    for name, value in {**headers, "Content-Length": str(len(BODY))}.items():
        conn.putheader(name, value)
    conn.endheaders(BODY.encode())
    response = conn.getresponse()
    status, answer = response.status, response.read()
    conn.close()
    return status, answer


def agent_headers(gw: Gateway, secret: str) -> dict[str, str]:
    """What Claude Code sends (checked with the real CLI: Host, JSON, its key in x-api-key):
    the gateway's TCP port once open, else the port its URL names inside a sandbox."""
    port = gw.port if gw.port is not None else gw.inside_port
    return {
        "Host": f"127.0.0.1:{port}",
        "Content-Type": "application/json",
        "x-api-key": secret,
        "anthropic-version": "2023-06-01",
    }


def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != name}


def test_an_outsider_gets_401_and_nothing_reaches_the_upstream(gateway, fake, caplog):
    claude, codex = gateway.issue_secret("claude"), gateway.issue_secret("codex")
    with Gateway({"anthropic": Upstream("anthropic", fake.base_url, REAL_KEY)}) as other:
        other_session = other.issue_secret("claude")
    ok = agent_headers(gateway, claude)
    path = "/h/claude/v1/messages"
    attacks = {
        "no secret": without(ok, "x-api-key"),
        "a wrong secret": {**ok, "x-api-key": "anything"},
        "a wrong bearer token": {**without(ok, "x-api-key"), "Authorization": "Bearer anything"},
        "another harness's secret": {**ok, "x-api-key": codex},
        "another session's secret": {**ok, "x-api-key": other_session},
        # Issue 16's report, exactly: a page's simple request, no preflight.
        "a browser's text/plain POST": {
            **ok,
            "x-api-key": "anything",
            "Content-Type": "text/plain",
            "Origin": "https://evil.example",
        },
        # The same, even holding the secret: a browser is refused before the secret is read.
        "a browser's POST with the secret": {**ok, "Origin": "https://evil.example"},
        "a text/plain POST with the secret": {**ok, "Content-Type": "text/plain;charset=UTF-8"},
        "a form POST with the secret": {**ok, "Content-Type": "application/x-www-form-urlencoded"},
        "a rebound DNS name": {**ok, "Host": f"evil.example:{gateway.port}"},
        "localhost under another port": {**ok, "Host": "127.0.0.1:1"},
    }
    caplog.set_level(logging.INFO)
    for what, headers in attacks.items():
        caplog.clear()
        status, response_headers, body = send(gateway.port, path, headers)
        assert status == 401, (what, body)
        assert not [h for h in response_headers if h.startswith("access-control-")], what
        assert "refused" in json.loads(body)["error"]["message"], what
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "refused POST /h/claude/v1/messages" in lines[0], (what, lines)
        assert claude not in lines[0] and codex not in lines[0] and other_session not in lines[0]
    # HTTP/1.1 without a Host never reaches a handler: tornado answers 400 itself.
    assert send(gateway.port, path, without(ok, "host"))[0] == 400
    assert fake.requests == []  # not one of them reached the upstream

    # The agent's own request, the same but for what the guard checks, goes through.
    status, response_headers, body = send(gateway.port, path, ok)
    assert status == 200 and json.loads(body)["content"][0]["text"] == "spent"
    assert not [h for h in response_headers if h.startswith("access-control-")]
    assert len(fake.requests) == 1 and fake.requests[0].headers["x-api-key"] == REAL_KEY
    # Codex's secret works on codex's path, in its wire format's header.
    status, _, _ = send(
        gateway.port,
        "/h/codex/v1/responses",
        {**without(ok, "x-api-key"), "Authorization": f"Bearer {codex}"},
        body=json.dumps({"model": "gpt-5", "input": "hi"}),
    )
    assert status == 200 and len(fake.requests) == 2


def test_every_path_and_method_needs_the_secret(gateway, fake):
    secret = gateway.issue_secret("claude")
    ok = agent_headers(gateway, secret)
    for method, path in [
        ("GET", "/h/claude/v1/models"),
        ("POST", "/h/claude/v1/messages/count_tokens"),
        ("HEAD", "/h/claude"),
        ("GET", "/"),
        ("GET", "/h/nobody/v1/models"),
        ("OPTIONS", "/h/claude/v1/messages"),
    ]:
        body = BODY if method == "POST" else None
        status, headers, _ = send(gateway.port, path, without(ok, "x-api-key"), method, body)
        assert status == 401, (method, path)
        assert not [h for h in headers if h.startswith("access-control-")]
    assert fake.requests == []
    # A CORS preflight from a page gets no CORS headers either.
    status, headers, _ = send(
        gateway.port,
        "/h/claude/v1/messages",
        {
            "Host": f"127.0.0.1:{gateway.port}",
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
        },
        "OPTIONS",
        None,
    )
    assert status == 401 and not [h for h in headers if h.startswith("access-control-")]
    assert send(gateway.port, "/h/claude/v1/models", ok, "GET", None)[0] == 200
    assert send(gateway.port, "/h/claude", ok, "HEAD", None)[0] == 200
    assert send(gateway.port, "/", ok, "GET", None)[0] == 401  # no secret is issued for it
    assert send(gateway.port, "/h/claude/v1/unknown", ok, "GET", None)[0] == 404
    assert fake.requests[0].path == "/v1/models"


def test_a_new_secret_revokes_the_old_one(gateway, fake):
    old = gateway.issue_secret("claude")
    new = gateway.issue_secret("claude")
    assert old != new and len(new) >= len(guard.SECRET_PREFIX) + 43  # 32 random bytes
    assert send(gateway.port, "/h/claude/v1/messages", agent_headers(gateway, old))[0] == 401
    assert send(gateway.port, "/h/claude/v1/messages", agent_headers(gateway, new))[0] == 200


def test_the_rehearsal_model_answers_only_its_gateway():
    secret = guard.new_secret()
    with FakeModelServer(SCENARIO, api_key=secret) as rehearsal:
        direct = {"Host": rehearsal.authority, "Content-Type": "application/json"}
        assert send(rehearsal.port, "/v1/messages", direct)[0] == 401
        assert send(rehearsal.port, "/v1/messages", {**direct, "x-api-key": "guess"})[0] == 401
        browser = {**direct, "x-api-key": secret, "Origin": "null", "Content-Type": "text/plain"}
        assert send(rehearsal.port, "/v1/messages", browser)[0] == 401
        assert rehearsal.requests == []
        assert send(rehearsal.port, "/v1/messages", {**direct, "x-api-key": secret})[0] == 200
        # The gateway, given the rehearsal's secret as its upstream key, is served.
        with Gateway(
            {"anthropic": Upstream("anthropic", rehearsal.base_url, secret, offline=True)},
            tcp=True,
        ) as gw:
            status, _, body = send(
                gw.port, "/h/pi/v1/messages", agent_headers(gw, gw.issue_secret("pi"))
            )
        assert status == 200 and json.loads(body)["content"][0]["text"] == "spent"
    # Without a key (a test double of a vendor), the same outsider's request is answered.
    with FakeModelServer(SCENARIO) as open_model:
        outsider = {"Host": open_model.authority, "Content-Type": "text/plain", "Origin": "null"}
        assert send(open_model.port, "/v1/messages", outsider)[0] == 200


@pytest.mark.parametrize(
    ("sentence", "method", "headers", "secret", "refused_because"),
    [
        ("the agent's request is served", "POST",
         {"host": "127.0.0.1:5", "content-type": "application/json", "x-api-key": "s3cr3t-key"},
         "s3cr3t-key", None),
        ("a bearer token works too", "POST",
         {"Host": "127.0.0.1:5", "Content-Type": "application/json; charset=utf-8",
          "Authorization": "Bearer s3cr3t-key"}, "s3cr3t-key", None),
        ("a GET needs no content type", "GET",
         {"Host": "127.0.0.1:5", "x-api-key": "s3cr3t-key"}, "s3cr3t-key", None),
        ("an Origin is refused first, even with the secret", "POST",
         {"Host": "127.0.0.1:5", "Content-Type": "application/json", "x-api-key": "s3cr3t-key",
          "Origin": "http://127.0.0.1:5"}, "s3cr3t-key", "Origin"),
        ("a rebound name is refused", "POST",
         {"Host": "attacker.example:5", "Content-Type": "application/json", "x-api-key": "s3cr3t-key"},
         "s3cr3t-key", "Host"),
        ("localhost is not the address served", "GET",
         {"Host": "localhost:5", "x-api-key": "s3cr3t-key"}, "s3cr3t-key", "Host"),
        ("text/plain is refused", "POST",
         {"Host": "127.0.0.1:5", "Content-Type": "text/plain", "x-api-key": "s3cr3t-key"},
         "s3cr3t-key", "not JSON"),
        ("a POST without a content type is refused", "POST",
         {"Host": "127.0.0.1:5", "x-api-key": "s3cr3t-key"}, "s3cr3t-key", "not JSON"),
        ("no secret is refused", "POST",
         {"Host": "127.0.0.1:5", "Content-Type": "application/json"}, "s3cr3t-key", "no secret"),
        ("a prefix of the secret is refused", "POST",
         {"Host": "127.0.0.1:5", "Content-Type": "application/json", "x-api-key": "s3cr3t"},
         "s3cr3t-key", "not the one"),
        ("a Basic credential is not a bearer token", "POST",
         {"Host": "127.0.0.1:5", "Content-Type": "application/json",
          "Authorization": "Basic s3cr3t-key"}, "s3cr3t-key", "no secret"),
        ("an empty key is no secret", "POST",
         {"Host": "127.0.0.1:5", "Content-Type": "application/json", "x-api-key": ""}, None,
         "no secret"),
        ("nothing matches a path with no secret issued", "POST",
         {"Host": "127.0.0.1:5", "Content-Type": "application/json", "x-api-key": "x"}, None,
         "not the one"),
    ],
)  # fmt: skip
def test_refusal_rules(sentence, method, headers, secret, refused_because):
    reason = guard.refusal(method, headers, "127.0.0.1:5", secret, "harness 'claude'")
    if refused_because is None:
        assert reason is None, sentence
    else:
        assert reason is not None and refused_because in reason, sentence
        assert "s3cr3t-key" not in reason, sentence


def _tcp_listeners() -> set[int]:
    return {
        c.laddr.port
        for c in psutil.Process().net_connections("tcp")
        if c.status == psutil.CONN_LISTEN
    }


def _modes(directory: Path) -> list[int]:
    """The modes of the files in `directory`, then its own."""
    return [p.stat().st_mode for p in directory.iterdir()] + [directory.stat().st_mode]


@pytest.mark.sandbox  # runs a sandbox
def test_the_egress_proxy_has_no_port_outside_the_sandbox(tmp_path):
    name = next((n for n in ("bwrap", "firejail") if not self_test(n)), None)
    if name is None:
        pytest.fail(f"no sandbox works here: {self_test('bwrap')}; {self_test('firejail')}")
    work = tmp_path / "work"
    work.mkdir()
    bridge_dir = Path(tempfile.mkdtemp(prefix="omk-test-bridge-"))
    spec = SandboxSpec(
        workdir=work,
        env={"PATH": os.environ["PATH"]},
        writable=(bridge_dir,),
        bridge_dir=bridge_dir,
        allow_hosts=("registry.npmjs.org",),
    )

    async def look() -> tuple[set[int], set[int], str, list[int]]:
        before = _tcp_listeners()
        proc = await start_sandboxed(["/bin/sleep", "30"], spec, resolve(name))
        try:
            assert proc.egress is not None
            return before, _tcp_listeners(), str(proc.egress.path), _modes(bridge_dir)
        finally:
            await proc.kill()

    before, during, path, modes = asyncio.run(look())
    assert during == before  # the kernel opened no TCP port for it: nothing outside can connect
    assert path.startswith(str(bridge_dir)) and path.endswith(".sock")
    assert stat.S_ISSOCK(modes[0]) and stat.S_IMODE(modes[0]) == 0o600
    assert stat.S_IMODE(modes[-1]) == 0o700  # only the user (and the sandbox's relay) gets in
    assert not bridge_dir.exists()  # cleaned up with the sandbox


def test_a_leaked_secret_finds_no_gateway_port_on_the_host(fake):
    """Issue 21: someone who learned an agent's secret (the agent printed its environment, a
    shared session showed it) posts a model call with it from any local process. Before, the
    gateway listened on 127.0.0.1, the URL's port, and this same request got 200, billed to the
    session. Now a gateway serves only its unix socket (0600, in a fresh 0700 dir of the user's
    0700 run root) until a TCP port is asked for: nothing listens at the URL's port on the host,
    and the kernel's process has no new TCP listener."""
    before = _tcp_listeners()
    with Gateway({"anthropic": Upstream("anthropic", fake.base_url, REAL_KEY)}) as gw:
        secret = gw.issue_secret("claude")
        ok = agent_headers(gw, secret)
        assert gw.base_url_for("claude", "anthropic") == f"http://{ok['Host']}/h/claude"
        assert gw.port is None and _tcp_listeners() == before
        with pytest.raises(ConnectionRefusedError):
            send(gw.inside_port, "/h/claude/v1/messages", ok)
        assert fake.requests == []

        path = gw.socket_path
        assert path is not None
        for entry, mode in ((path, 0o600), (path.parent, 0o700), (path.parent.parent, 0o700)):
            info = os.lstat(entry)
            assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == mode, entry
        assert stat.S_ISSOCK(os.lstat(path).st_mode) and stat.S_ISDIR(os.lstat(path.parent).st_mode)
        # The bridge's way in: the same request through the socket is served.
        assert send_unix(path, "/h/claude/v1/messages", ok)[0] == 200
        assert send_unix(path, "/h/claude/v1/messages", {**ok, "x-api-key": "guess"})[0] == 401

        # Asked for (an agent started with `%sandbox off`): a TCP port, where the secret works.
        port = gw.open_tcp()
        assert gw.open_tcp() == port and _tcp_listeners() == before | {port}
        assert gw.base_url_for("claude", "anthropic", tcp=True).startswith(
            f"http://127.0.0.1:{port}/"
        )
        assert send(port, "/h/claude/v1/messages", agent_headers(gw, secret))[0] == 200
        # Either Host an agent sends is served, on either door; nothing else.
        assert send(port, "/h/claude/v1/messages", ok)[0] == 200
        rebound = {**ok, "Host": f"evil.example:{port}"}
        assert send(port, "/h/claude/v1/messages", rebound)[0] == 401
    assert not path.exists() and not path.parent.exists()  # removed when the gateway stops
    assert _tcp_listeners() == before


def test_the_run_root_must_be_the_users_own(tmp_path):
    """The socket's run root could have been made first by someone else in a shared /tmp (or
    be a link planted there): then they could swap the socket. It is refused, never followed."""
    mine = private_root(tmp_path / "fresh")
    assert stat.S_IMODE(os.lstat(mine).st_mode) == 0o700
    (tmp_path / "open").mkdir(mode=0o755)
    assert stat.S_IMODE(os.lstat(private_root(tmp_path / "open")).st_mode) == 0o700  # closed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "planted").symlink_to(elsewhere)
    with pytest.raises(PermissionError):
        private_root(tmp_path / "planted")
    if os.geteuid() == 0:  # only root can give a dir to another user
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 4242, -1)
        with pytest.raises(PermissionError):
            private_root(theirs)


def test_a_sessions_secret_stays_between_its_agent_and_its_gateway(tmp_path, caplog):
    """Offline (the rehearsal model), with the real Claude Code in the sandbox: the turn works
    with the issued secret, the rehearsal model answers only the gateway, and neither secret is
    in the events, the store, the cassette or the log."""
    require_cli("claude")
    work = tmp_path / "work"
    work.mkdir()
    store_path, cassette = tmp_path / "store.sqlite3", tmp_path / "nb.cassette.jsonl"
    session = AgentSession(
        store=SessionStore(store_path),
        session_id="guarded",
        notebook=str(work / "nb.ipynb"),
        cwd=work,
        state_dir=tmp_path / "state",
        upstream_config=UpstreamConfig(),
        harness="claude",
        auto_approve=True,
    )
    caplog.set_level(logging.DEBUG)

    async def turn() -> tuple[list[Event], str, str]:
        session.gateway.record_to(cassette)
        try:
            events = [e async for e in session.run_prompt("hello from the guarded session")]
            agent_secret = session._harnesses["claude"].ctx.upstream.api_key
            rehearsal = session._rehearsal
            outsider = {"Host": rehearsal.authority, "Content-Type": "application/json"}
            assert send(rehearsal.port, "/v1/messages", outsider)[0] == 401
            assert (
                send(rehearsal.port, "/v1/messages", {**outsider, "x-api-key": agent_secret})[0]
                == 401
            )
            gw = session.gateway
            assert gw.port is None and gw.socket_path is not None  # sandboxed: no TCP port
            placeholder = agent_headers(gw, "omnikernel-placeholder-key")
            assert send_unix(gw.socket_path, "/h/claude/v1/messages", placeholder)[0] == 401
            return events, agent_secret, rehearsal.api_key
        finally:
            await session.close()

    try:
        events, agent_secret, rehearsal_secret = asyncio.run(turn())
    finally:
        session.kill_now()
    assert events[-1].data["status"] == "completed", events
    assert any(e.kind == EventKind.SPEND for e in events)  # the secret got the call through
    assert agent_secret.startswith(guard.SECRET_PREFIX) and rehearsal_secret != agent_secret

    shown = "\n".join(json.dumps(e.data) for e in events)
    stored = "\n".join(
        str(row) for row in sqlite3.connect(store_path).execute("SELECT * FROM events")
    )
    logged = "\n".join(r.getMessage() for r in caplog.records)
    recorded = cassette.read_text()
    # The refusals above are logged (Claude Code's key-less HEAD probe is one more when it makes
    # it; with the egress proxy's variables set it does not).
    assert recorded.strip() and "Gateway refused POST /h/claude" in logged
    for secret in (agent_secret, rehearsal_secret):
        for where, text in (
            ("events", shown),
            ("store", stored),
            ("log", logged),
            ("cassette", recorded),
        ):
            assert secret not in text, f"a secret is in the {where}"
