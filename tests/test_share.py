"""The share server, on a free port against a real store: every security rule attempted and
refused (next to the same attempt done right, which works), and the sandbox that cannot reach
it. What the page's feed shows, and how it reaches many viewers, is `test_share_feed`."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import shutil
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
from typing import Any

import pytest
import requests
import websocket

from jupyter_ext.share import bodies
from jupyter_ext.share.client import Grant, JoinError, exchange
from jupyter_ext.share.limits import FAILURES_ALLOWED, GLOBAL_FAILURES_ALLOWED
from jupyter_ext.share.server import ShareServer
from omnikernel.events import Event, EventKind
from omnikernel.store.sessions import SessionStore
from omnikernel.store.shares import ShareCodes

from .test_sandbox import backend, box, run, spec_for  # noqa: F401  (fixtures)

SESSION = "s-share"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Running:
    """A ShareServer on its own thread and loop, as the jupyter server would run it."""

    def __init__(self, store_path: Any, clock: Clock, **options: Any):
        self.server = ShareServer(store_path, port=0, clock=clock, **options)
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(lambda: (self.server.start(), started.set()))
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert started.wait(10)
        self.url = f"{self.server.scheme}://127.0.0.1:{self.server.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path) -> SessionStore:
    s = SessionStore(tmp_path / "store.sqlite3")
    s.open_session(SESSION, "nb.ipynb")
    return s


@pytest.fixture
def share(store, clock):
    running = Running(store.path, clock)
    yield running
    running.stop()


def add(store: SessionStore, kind: EventKind, **data: Any) -> Event:
    return store.append(Event(kind, data, session_id=SESSION, harness="claude", turn=1))


def join(share: Running, code: str, **headers: str) -> Grant:
    """Open a link like the page: GET the confirmation page, POST the code for a grant."""
    page = requests.get(f"{share.url}/join", params={"code": code}, headers=headers)
    assert page.status_code == 200, page.text
    assert code not in page.text and "Set-Cookie" not in page.headers
    return exchange(share.url, code)


def ws(
    share: Running, grant: Grant | None, since: int = 0, origin: str | None = "same"
) -> websocket.WebSocket:
    kwargs: dict[str, Any] = {"timeout": 10}
    if grant is not None:
        kwargs["subprotocols"] = grant.subprotocols
    if origin == "same":
        kwargs["origin"] = share.url
    elif origin is None:
        kwargs["suppress_origin"] = True
    else:
        kwargs["origin"] = origin
    return websocket.create_connection(
        f"ws://127.0.0.1:{share.server.port}/ws?since={since}", **kwargs
    )


def received(sock: websocket.WebSocket, upto: int) -> list[int]:
    seqs: list[int] = []
    while not seqs or seqs[-1] < upto:
        seqs += [m["seq"] for m in json.loads(sock.recv())["events"]]
    return seqs


def messages(sock: websocket.WebSocket, upto: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while not out or out[-1]["seq"] < upto:
        out += json.loads(sock.recv())["events"]
    return out


def test_codes_are_stored_hashed_expire_and_revoke(store, clock):
    codes = ShareCodes(store.path, clock=clock)
    ro = codes.new_code(SESSION, "ro")
    assert len(ro) >= 43  # 256 random bits, base64url
    assert ro.encode() not in store.path.read_bytes()
    rows = sqlite3.connect(store.path).execute("SELECT hashed, prefix FROM share_codes").fetchall()
    assert all(ro not in h and len(p) == 4 for h, p in rows)
    assert codes.lookup(ro).role == "ro"
    assert codes.lookup(ro[:-1] + ("A" if ro[-1] != "A" else "B")) is None
    clock.now += 24 * 3600 + 1
    assert codes.lookup(ro) is None  # expired
    clock.now -= 24 * 3600 + 1
    rw = codes.new_code(SESSION, "rw")
    assert codes.revoke(SESSION, ("rw",)) == 1
    assert codes.lookup(rw) is None and codes.lookup(ro) is not None


def grant_of(share: Running, grant: Grant | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {grant.token}"} if grant else {}
    return requests.get(f"{share.url}/api/grant", headers=headers)


def test_get_only_confirms_and_the_post_from_the_page_exchanges(share, store):
    code = ShareCodes(store.path).new_code(SESSION, "ro")
    page = requests.get(f"{share.url}/join", params={"code": code})
    assert page.status_code == 200 and "Open the session" in page.text and "read-only" in page.text
    assert code not in page.text  # the page's script reads it from its own address
    # A link preview (GET) spends nothing and grants nothing.
    assert grant_of(share, None).status_code == 403
    # A POST from any other page is refused: without an Origin, from another origin (another
    # port of the same host included), or as a form (a cross-site form cannot send JSON).
    body = json.dumps({"code": code})
    json_type = {"Content-Type": "application/json"}
    for headers in (
        {},
        {"Origin": "http://evil.example"},
        {"Origin": f"http://127.0.0.1:{share.server.port + 1}"},
    ):
        forged = requests.post(f"{share.url}/join", data=body, headers={**json_type, **headers})
        assert forged.status_code == 403 and "grant" not in forged.text
    as_form = requests.post(f"{share.url}/join", data={"code": code}, headers={"Origin": share.url})
    assert as_form.status_code == 415 and "grant" not in as_form.text
    grant = join(share, code)
    assert grant.token != code and grant.role == "ro" and grant.session == SESSION
    me = grant_of(share, grant)
    assert me.status_code == 200 and me.json()["role"] == "ro", me.text
    assert "Set-Cookie" not in me.headers  # nothing a browser would send on its own
    # The live page is a shell, the same for everyone: no code, no grant, no session.
    live = requests.get(f"{share.url}/live")
    assert live.status_code == 200 and SESSION not in live.text and grant.token not in live.text


def test_a_revoked_or_expired_link_says_so_before_anything_else(share, store, clock):
    codes = ShareCodes(store.path, clock=clock)
    revoked, expiring = codes.new_code(SESSION, "rw"), codes.new_code(SESSION, "ro", ttl_s=60)
    codes.revoke(SESSION, ("rw",))
    clock.now += 61
    for code in (revoked, expiring, "not-a-code"):
        page = requests.get(f"{share.url}/join", params={"code": code})
        assert page.status_code == 403 and "revoked or has expired" in page.text
        assert "Open the session" not in page.text and SESSION not in page.text


def test_host_check_refuses_a_rebound_name(share, store):
    grant = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    assert grant_of(share, grant).status_code == 200
    rebound = requests.get(
        f"{share.url}/api/grant",
        headers={
            "Host": f"evil.example:{share.server.port}",
            "Authorization": f"Bearer {grant.token}",
        },
    )
    assert rebound.status_code == 403 and "Host" in rebound.text
    page = requests.get(f"{share.url}/join", headers={"Host": "evil.example"})
    assert page.status_code == 403


def test_read_only_cannot_answer_and_co_drive_needs_its_grant_and_origin(share, store):
    codes = ShareCodes(store.path)
    add(store, EventKind.APPROVAL_REQUEST, request_id="r1", tool="Bash", summary="git push")
    body = {"request_id": "r1", "allow": True}
    ro = join(share, codes.new_code(SESSION, "ro"))
    refused = requests.post(f"{share.url}/api/answer", json=body, headers=ro.headers)
    assert refused.status_code == 403 and "read-only" in refused.text
    rw = join(share, codes.new_code(SESSION, "rw"))
    no_grant = {**rw.headers, "Authorization": ""}
    assert requests.post(f"{share.url}/api/answer", json=body, headers=no_grant).status_code == 403
    cross = requests.post(
        f"{share.url}/api/answer",
        json=body,
        headers={**rw.headers, "Origin": "http://evil.example"},
    )
    assert cross.status_code == 403
    assert codes.take_answer(SESSION, "r1") is None  # nothing reached the kernel
    sent = requests.post(f"{share.url}/api/answer", json=body, headers=rw.headers)
    assert sent.status_code == 202, sent.text
    allow, who, source = codes.take_answer(SESSION, "r1")
    assert allow and who.startswith("co-drive at 127.0.0.1") and source == "share page"
    add(
        store,
        EventKind.APPROVAL_DECISION,
        request_id="r1",
        decision="allow",
        reason="approved by co-drive (share page)",
    )
    late = requests.post(f"{share.url}/api/answer", json=body, headers=rw.headers)
    assert late.status_code == 409 and "too late" in late.text


@pytest.mark.parametrize("body, says", [
    ({"request_id": "r1", "allow": "false"}, "allow must be a JSON boolean"),
    ({"request_id": "r1", "allow": "true"}, "allow must be a JSON boolean"),
    ({"request_id": "r1", "allow": 0}, "allow must be a JSON boolean"),
    ({"request_id": "r1", "allow": None}, "allow must be a JSON boolean"),
    ({"request_id": "r1"}, "missing allow"),
    ({"request_id": 1, "allow": False}, "request_id must be a JSON string"),
    ({"request_id": "r1", "allow": False, "by": "the owner"}, "unknown field"),
    ({"request_id": "", "allow": False}, "request_id must be 1 to"),
    ([{"request_id": "r1", "allow": False}], "not a JSON object"),
    ("not json at all", "not JSON"),
])  # fmt: skip
def test_a_malformed_answer_is_refused_and_never_decides(share, store, body, says):
    codes = ShareCodes(store.path)
    add(store, EventKind.APPROVAL_REQUEST, request_id="r1", tool="Bash", summary="git push")
    rw = join(share, codes.new_code(SESSION, "rw"))
    data = body if isinstance(body, str) else json.dumps(body)
    refused = requests.post(f"{share.url}/api/answer", data=data, headers=rw.headers)
    assert refused.status_code == 400 and says in refused.json()["result"], refused.text
    assert codes.given_answer(SESSION, "r1") is None  # nothing for the kernel to take


def test_oversized_and_deeply_nested_bodies_are_refused_unread(share, store):
    rw = join(share, ShareCodes(store.path).new_code(SESSION, "rw"))
    deep = "[" * 100_000 + "]" * 100_000
    try:
        nested = requests.post(f"{share.url}/api/answer", data=deep, headers=rw.headers)
        assert nested.status_code == 400, nested.text  # never a 500
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        pass  # refused before the client finished sending it: what we want
    with pytest.raises(bodies.BodyError, match="not JSON"):
        bodies.answer(deep.encode())  # past the parser's recursion limit: refused all the same
    small_deep = '{"request_id": "r1", "allow": ' + "[" * 400 + "]" * 400 + "}"
    refused = requests.post(f"{share.url}/api/answer", data=small_deep, headers=rw.headers)
    assert refused.status_code == 400, refused.text
    # A body is read only after the request showed its grant, and only up to its route's
    # size: each of these is answered at once, with not one byte of the body sent.
    port = share.server.port
    no_grant = f"Origin: {share.url}\r\nContent-Type: application/json\r\n"
    with_grant = no_grant + f"Authorization: Bearer {rw.token}\r\n"
    for path, headers, length, status in (
        ("/api/prompt", no_grant, 100_000_000, 403),  # no grant: nothing more is looked at
        ("/api/prompt", no_grant, 50_000, 403),
        ("/api/prompt", with_grant, 100_000_000, 400),  # granted, past a prompt's size
        ("/api/answer", with_grant, 50_000, 400),  # granted, past an answer's size
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(
                (
                    f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}"
                    f"Content-Length: {length}\r\n\r\n"
                ).encode()
            )
            answer = raw.recv(4096).decode()
        assert answer.startswith(f"HTTP/1.1 {status}"), (path, length, answer)


def test_websocket_needs_its_grant_and_its_own_origin(share, store):
    add(store, EventKind.TEXT, text="hello")
    grant = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    for origin in (None, "http://evil.example", f"http://localhost:{share.server.port + 1}"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            ws(share, grant, origin=origin)
        assert refused.value.status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException):
        ws(share, None)  # no grant
    forged = Grant(grant.url, "x" * 43, grant.session, grant.role)
    with pytest.raises(websocket.WebSocketBadStatusException):
        ws(share, forged)
    sock = ws(share, grant)
    assert sock.subprotocol == "omk-share"
    assert received(sock, 1) == [1]
    sock.close()


def post_code_from(share: Running, code: str, source_ip: str) -> int:
    """POST a code from another loopback address (all of 127.0.0.0/8 is this machine)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", share.server.port, timeout=10, source_address=(source_ip, 0)
    )
    connection.request(
        "POST",
        "/join",
        body=json.dumps({"code": code}),
        headers={"Origin": share.url, "Content-Type": "application/json"},
    )
    status = connection.getresponse().status
    connection.close()
    return status


def test_wrong_codes_are_rate_limited_per_address_and_in_all(share, store):
    code = ShareCodes(store.path).new_code(SESSION, "rw")
    statuses = [
        post_code_from(share, f"wrong{i}", "127.0.0.1") for i in range(FAILURES_ALLOWED + 1)
    ]
    assert statuses == [403] * FAILURES_ALLOWED + [429]
    # Even the right code waits now: guessing cannot go on.
    with pytest.raises(JoinError) as waited:
        exchange(share.url, code)
    assert waited.value.status == 429
    # Rotating through loopback addresses meets the global cap.
    statuses = [
        post_code_from(share, f"wrong{i}", f"127.0.{i // 250 + 1}.{i % 250 + 2}")
        for i in range(GLOBAL_FAILURES_ALLOWED + 5)
    ]
    assert statuses.count(429) >= 5 + FAILURES_ALLOWED, statuses
    assert post_code_from(share, code, "127.0.9.9") == 429


def test_codes_and_grants_never_reach_a_log_whatever_is_refused(share, store):
    """Tornado's own warning for a refused request prints the URI with its query string; every
    refusal here is attempted with a live code in the query, and every log line read."""
    seen: list[str] = []

    class Everything(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.name.startswith("urllib3"):
                return  # the test's own client, logging the URLs it asks for
            seen.append(
                record.getMessage()
                + (logging.Formatter().formatException(record.exc_info) if record.exc_info else "")
            )

    handler = Everything(level=logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        code = ShareCodes(store.path).new_code(SESSION, "rw")
        grant = join(share, code)
        port = share.server.port
        attempts = [
            ("GET", f"/join?code={code}", {"Host": f"phone.lan:{port}"}),  # a name not configured
            ("GET", f"/join?code={code}", {"Host": "127.0.0.1"}),  # a Host without the port
            ("POST", f"/join?code={code}&_xsrf={grant.token}", {}),  # no Origin
            ("POST", f"/api/answer?code={code}", {"Origin": share.url}),  # form type
            ("GET", f"/api/grant?code={code}", {"Authorization": f"Bearer {grant.token}x"}),
            ("GET", f"/ws?code={code}", {"Authorization": f"Bearer {grant.token}"}),
            ("GET", f"/nowhere?code={code}", {}),
        ]
        for method, path, headers in attempts:
            answer = requests.request(method, f"{share.url}{path}", headers=headers)
            assert answer.status_code >= 400, (path, answer.status_code)
        assert exchange(share.url, code).token  # and the good path once more
        time.sleep(0.2)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logged = "\n".join(seen)
    assert "/join" in logged and "403" in logged  # the refusals are logged, without the secrets
    assert code not in logged and grant.token not in logged, logged


def test_revoking_closes_open_sockets_and_refuses_grants(share, store):
    codes = ShareCodes(store.path)
    add(store, EventKind.TEXT, text="before")
    ro = join(share, codes.new_code(SESSION, "ro"))
    rw = join(share, codes.new_code(SESSION, "rw"))
    ro_sock, rw_sock = ws(share, ro), ws(share, rw)
    assert received(ro_sock, 1) == [1] and received(rw_sock, 1) == [1]
    assert codes.revoke(SESSION, ("ro",)) == 1
    ro_sock.settimeout(5)
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        while True:
            ro_sock.recv()
    assert grant_of(share, ro).status_code == 403
    add(store, EventKind.TOOL_CALL, tool="Bash", summary="ls")
    assert received(rw_sock, 2) == [2]  # the co-drive link goes on
    assert grant_of(share, rw).status_code == 200
    rw_sock.close()


def test_an_expired_link_and_grant_are_refused(share, store, clock):
    codes = ShareCodes(store.path, clock=clock)
    code = codes.new_code(SESSION, "ro", ttl_s=60)
    grant = join(share, code)
    assert grant_of(share, grant).status_code == 200
    clock.now += 61
    assert grant_of(share, grant).status_code == 403
    with pytest.raises(JoinError) as refused:
        exchange(share.url, code)
    assert refused.value.status == 403


def test_the_sandbox_cannot_reach_the_share_server(backend, box, share):
    port = share.server.port
    tcp = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED"
    assert "CONNECTED" in run(None, tcp, spec_for(box))[1]  # unsandboxed, it is reachable
    assert "CONNECTED" not in run(backend, tcp, spec_for(box))[1]


def test_with_a_certificate_it_serves_https_only(store, clock, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed; install it with: apt-get install -y openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    running = Running(store.path, clock, certfile=str(cert), keyfile=str(key))
    try:
        assert running.url.startswith("https://")
        code = ShareCodes(store.path).new_code(SESSION, "ro")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{running.server.port}/join", params={"code": code})
        trust = ssl.create_default_context(cafile=str(cert))
        # An http page (another origin) cannot exchange the code, even on the same port.
        with pytest.raises(JoinError) as refused:
            exchange(running.url, code, context=trust, origin=running.url.replace("https", "http"))
        assert refused.value.status == 403
        grant = exchange(running.url, code, context=trust)
        me = requests.get(
            f"{running.url}/api/grant",
            verify=str(cert),
            headers={"Authorization": f"Bearer {grant.token}"},
        )
        assert me.status_code == 200 and me.json()["role"] == "ro"
        # Live events over TLS: the frame built once goes through each socket's TLS stream.
        first = add(store, EventKind.TOOL_CALL, tool="Bash", summary="over tls")
        sock = websocket.create_connection(
            f"wss://127.0.0.1:{running.server.port}/ws?since={first.seq - 1}",
            timeout=10,
            subprotocols=grant.subprotocols,
            origin=running.url,
            sslopt={"ca_certs": str(cert)},
        )
        assert received(sock, first.seq) == [first.seq]
        live = add(store, EventKind.NOTICE, message="t" * 70_000)
        (message,) = messages(sock, live.seq)
        assert message["html"].count("t" * 1000) == 70
        sock.close()
    finally:
        running.stop()


def test_the_kernel_takes_the_page_answer_and_first_answer_wins(store):
    from omnikernel.approvals.decide import Decision
    from omnikernel.approvals.from_share import watch_answers
    from omnikernel.approvals.pending import PendingApprovals

    codes = ShareCodes(store.path)
    approvals = PendingApprovals(timeout_s=30)
    approvals.presenters.append(watch_answers(approvals, lambda: codes, lambda: SESSION))
    asked = Decision("ask", "a rule asks", "policy", ["ask"])

    async def scenario() -> tuple[Decision, Decision, str]:
        # The page answers first: the kernel takes it, with who and from where.
        first = asyncio.ensure_future(approvals.ask("r1", {"tool": "Bash"}, asked))
        await asyncio.sleep(0.1)
        codes.post_answer(SESSION, "r1", True, "co-drive at 10.0.0.7", "share page")
        from_page = await asyncio.wait_for(first, 5)
        # The notebook answers first: the page's later answer changes nothing.
        second = asyncio.ensure_future(approvals.ask("r2", {"tool": "Bash"}, asked))
        await asyncio.sleep(0.1)
        said = approvals.answer("r2", False, by="me", source="widget")
        codes.post_answer(SESSION, "r2", True, "co-drive at 10.0.0.7", "share page")
        from_widget = await asyncio.wait_for(second, 5)
        await asyncio.sleep(0.2)
        return from_page, from_widget, said

    from_page, from_widget, said = asyncio.run(scenario())
    assert from_page.allow and from_page.source == "share page"
    assert "approved by co-drive at 10.0.0.7 (share page)" in from_page.reason
    assert said == "accepted" and not from_widget.allow and from_widget.source == "widget"
    assert approvals.answer("r2", True, by="co-drive", source="share page").startswith("too late")


def test_co_driver_prompts_need_a_co_drive_grant_and_a_notebook_taking_them(share, store, clock):
    codes = ShareCodes(store.path, clock=clock)
    body = {"text": "summarise the repository"}
    ro = join(share, codes.new_code(SESSION, "ro"))
    refused = requests.post(f"{share.url}/api/prompt", json=body, headers=ro.headers)
    assert refused.status_code == 403 and "read-only" in refused.text
    rw = join(share, codes.new_code(SESSION, "rw"))
    good = rw.headers
    no_grant = {**good, "Authorization": ""}
    assert requests.post(f"{share.url}/api/prompt", json=body, headers=no_grant).status_code == 403
    cross = requests.post(
        f"{share.url}/api/prompt", json=body, headers={**good, "Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    # No kernel shows the session's feed: said at once, nothing queued to run by surprise.
    nobody = requests.post(f"{share.url}/api/prompt", json=body, headers=good)
    assert nobody.status_code == 409 and "%share" in nobody.json()["result"]
    assert codes.take_prompt(SESSION) is None
    codes.feed_opened(SESSION)  # this test process plays the kernel showing the feed
    for bad, status in (({"text": "  "}, 400), ({"txt": "x"}, 400), ({"text": "x" * 20001}, 413)):
        assert (
            requests.post(f"{share.url}/api/prompt", json=bad, headers=good).status_code == status
        )
    sent = requests.post(f"{share.url}/api/prompt", json=body, headers=good)
    assert sent.status_code == 202 and sent.json()["ahead"] == 0, sent.text
    second = requests.post(f"{share.url}/api/prompt", json={"text": "then test it"}, headers=good)
    assert second.json()["ahead"] == 1
    first = codes.take_prompt(SESSION)
    assert first.text == "summarise the repository" and first.source == "share page"
    assert first.who.startswith("co-drive at 127.0.0.1")
    assert codes.take_prompt(SESSION).text == "then test it"
    assert codes.take_prompt(SESSION) is None  # each is taken once
    # A prompt nobody took for ten minutes is dropped, not run by surprise later.
    requests.post(f"{share.url}/api/prompt", json=body, headers=good)
    clock.now += 601
    assert codes.take_prompt(SESSION) is None
    codes.feed_closed(SESSION)
    assert not codes.feed_open(SESSION)


def test_links_answers_and_prompts_that_can_never_be_used_are_purged(store, clock):
    codes = ShareCodes(store.path, clock=clock)
    ended = codes.new_code(SESSION, "rw")
    grant = codes.grant(codes.lookup(ended))
    live = codes.new_code(SESSION, "ro", ttl_s=7 * 24 * 3600)
    codes.post_answer(SESSION, "r1", True, "co-drive", "share page")
    codes.post_prompt(SESSION, "go on", "co-drive", "share page")
    assert codes.purge() == 0  # nothing is old yet
    clock.now += 2 * 24 * 3600 + 1  # the day link expired a day ago
    assert codes.purge() == 4  # its code, its grant, the answer, the prompt
    assert codes.granted(grant) is None and codes.lookup(live) is not None
    tables = ("share_codes", "share_grants", "share_answers", "share_prompts")
    db = sqlite3.connect(store.path)
    assert [db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables] == [1, 0, 0, 0]


def test_grants_to_named_people_and_groups(store, clock):
    codes = ShareCodes(store.path, clock=clock)
    bob = codes.share_with(SESSION, "bob", "ro")
    assert bob.person == "bob" and bob.code_id.startswith("sp_")
    codes.share_with(SESSION, "group:data-team", "rw")
    # Co-drive through the group beats bob's own read-only grant; carol is in no group.
    assert codes.granted_to(SESSION, "bob", ["data-team"]).role == "rw"
    assert codes.granted_to(SESSION, "bob", []).role == "ro"
    assert codes.granted_to(SESSION, "carol", ["other"]) is None
    assert codes.granted_to("s-other", "bob", ["data-team"]) is None
    # Sharing again replaces; %share revoke (links) leaves people alone; revoke_person ends it.
    codes.share_with(SESSION, "bob", "rw")
    assert [(c.person, c.role) for c in codes.people(SESSION)] == [
        ("group:data-team", "rw"),
        ("bob", "rw"),
    ]
    assert codes.revoke(SESSION) == 0
    assert codes.revoke_person(SESSION, "bob") == 1
    assert codes.revoked_among({bob.code_id}) == {bob.code_id}
    assert not codes.shared_anywhere("bob") and codes.shared_anywhere("group:data-team")
    # A grant row holds no code anyone has: an empty or guessed code finds nothing.
    assert codes.lookup("") is None and codes.lookup("sp_") is None
    for bad in ("", "a/b", "bob smith", "<script>", "group:"):
        with pytest.raises(ValueError):
            codes.share_with(SESSION, bad, "ro")


def test_a_store_from_before_sharing_by_name_gains_the_column(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE share_codes (code_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, "
        "role TEXT NOT NULL, prefix TEXT NOT NULL, hashed TEXT NOT NULL, created REAL NOT "
        "NULL, expires REAL NOT NULL, revoked REAL)"
    )
    db.commit()
    db.close()
    codes = ShareCodes(path)
    code = codes.new_code(SESSION, "ro")
    assert codes.lookup(code) is not None
    assert codes.share_with(SESSION, "bob", "ro").person == "bob"


def test_approvers_owner_keeps_co_drivers_from_answering(store, clock):
    running = Running(store.path, clock, approvers="owner")
    try:
        codes = ShareCodes(store.path)
        add(store, EventKind.APPROVAL_REQUEST, request_id="r9", tool="Bash", summary="rm")
        rw = join(running, codes.new_code(SESSION, "rw"))
        assert grant_of(running, rw).json()["may_answer"] is False
        body = {"request_id": "r9", "allow": True}
        refused = requests.post(f"{running.url}/api/answer", json=body, headers=rw.headers)
        assert refused.status_code == 403 and "owner" in refused.text
        assert codes.take_answer(SESSION, "r9") is None
    finally:
        running.stop()
    with pytest.raises(ValueError, match="approvers"):
        ShareServer(store.path, approvers="anyone")


def test_anonymous_links_off_refuses_every_code(store, clock):
    running = Running(store.path, clock, anonymous_links=False)
    try:
        code = ShareCodes(store.path).new_code(SESSION, "rw")
        page = requests.get(f"{running.url}/join", params={"code": code})
        assert page.status_code == 403 and "anonymous_links" in page.text
        with pytest.raises(JoinError):
            exchange(running.url, code)
    finally:
        running.stop()
