"""The share server, on a free port against a real store: every security rule attempted and
refused (next to the same attempt done right, which works), late joiners and reconnects, and
the sandbox that cannot reach it."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import sqlite3
import subprocess
import threading
import time
from typing import Any

import pytest
import requests
import websocket

from jupyter_ext.share.codes import ShareCodes
from jupyter_ext.share.server import FAILURES_ALLOWED, ShareServer
from omnikernel.events import Event, EventKind
from omnikernel.store import SessionStore

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


def join(share: Running, code: str, **headers: str) -> requests.Session:
    """Open a link like a browser: GET the confirmation page, POST its form."""
    browser = requests.Session()
    page = browser.get(f"{share.url}/join", params={"code": code}, headers=headers)
    assert page.status_code == 200, page.text
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    answer = browser.post(f"{share.url}/join", data={"code": code, "_xsrf": xsrf},
                          allow_redirects=False, headers=headers)  # fmt: skip
    assert answer.status_code == 303, answer.text
    return browser


def ws(share: Running, browser: requests.Session | None, since: int = 0,
       origin: str | None = "same") -> websocket.WebSocket:  # fmt: skip
    header = []
    if browser is not None:
        cookies = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        header.append(f"Cookie: {cookies}")
    kwargs: dict[str, Any] = {"header": header, "timeout": 10}
    if origin == "same":
        kwargs["origin"] = share.url
    elif origin is None:
        kwargs["suppress_origin"] = True
    else:
        kwargs["origin"] = origin
    return websocket.create_connection(f"ws://127.0.0.1:{share.server.port}/ws?since={since}",
                                       **kwargs)  # fmt: skip


def received(sock: websocket.WebSocket, upto: int) -> list[int]:
    seqs: list[int] = []
    while not seqs or seqs[-1] < upto:
        seqs += [m["seq"] for m in json.loads(sock.recv())["events"]]
    return seqs


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


def test_get_only_confirms_post_exchanges_with_xsrf(share, store):
    code = ShareCodes(store.path).new_code(SESSION, "ro")
    browser = requests.Session()
    page = browser.get(f"{share.url}/join", params={"code": code})
    assert page.status_code == 200 and "Open the session" in page.text
    # A link preview (GET) spends nothing and grants nothing.
    assert browser.get(f"{share.url}/live").status_code == 403
    # A POST without the XSRF token (a cross-site form) is refused.
    forged = requests.post(f"{share.url}/join", data={"code": code}, allow_redirects=False)
    assert forged.status_code == 403 and "omk_share" not in forged.cookies
    browser = join(share, code)
    cookie = next(c for c in browser.cookies if c.name == "omk_share")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.value != code
    live = browser.get(f"{share.url}/live")
    assert live.status_code == 200 and 'data-role="ro"' in live.text
    assert code not in live.text
    # The confirmation page echoes the code from the URL: escaped, never markup.
    injected = requests.get(f"{share.url}/join", params={"code": '"><script>alert(1)</script>'})
    assert "<script>alert" not in injected.text and "&lt;script&gt;" in injected.text


def test_host_check_refuses_a_rebound_name(share, store):
    browser = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    assert browser.get(f"{share.url}/live").status_code == 200
    rebound = browser.get(
        f"{share.url}/live", headers={"Host": f"evil.example:{share.server.port}"}
    )
    assert rebound.status_code == 403 and "Host" in rebound.text
    page = requests.get(f"{share.url}/join", headers={"Host": "evil.example"})
    assert page.status_code == 403


def test_read_only_cannot_answer_and_co_drive_needs_xsrf(share, store):
    codes = ShareCodes(store.path)
    add(store, EventKind.APPROVAL_REQUEST, request_id="r1", tool="Bash", summary="git push")
    body = {"request_id": "r1", "allow": True}
    ro = join(share, codes.new_code(SESSION, "ro"))
    xsrf = {"X-XSRFToken": ro.cookies["_xsrf"]}
    refused = ro.post(f"{share.url}/api/answer", json=body, headers=xsrf)
    assert refused.status_code == 403 and "read-only" in refused.text
    rw = join(share, codes.new_code(SESSION, "rw"))
    assert rw.post(f"{share.url}/api/answer", json=body).status_code == 403  # no XSRF token
    cross = rw.post(f"{share.url}/api/answer", json=body, headers={
        "X-XSRFToken": rw.cookies["_xsrf"], "Origin": "http://evil.example"})  # fmt: skip
    assert cross.status_code == 403
    assert codes.take_answer(SESSION, "r1") is None  # nothing reached the kernel
    sent = rw.post(f"{share.url}/api/answer", json=body, headers={
        "X-XSRFToken": rw.cookies["_xsrf"], "Origin": share.url})  # fmt: skip
    assert sent.status_code == 202, sent.text
    allow, who, source = codes.take_answer(SESSION, "r1")
    assert allow and who.startswith("co-drive at 127.0.0.1") and source == "share page"
    add(store, EventKind.APPROVAL_DECISION, request_id="r1", decision="allow",
        reason="approved by co-drive (share page)")  # fmt: skip
    late = rw.post(f"{share.url}/api/answer", json=body, headers={
        "X-XSRFToken": rw.cookies["_xsrf"]})  # fmt: skip
    assert late.status_code == 409 and "too late" in late.text


def test_websocket_needs_cookie_and_its_own_origin(share, store):
    add(store, EventKind.TEXT, text="hello")
    browser = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    for origin in (None, "http://evil.example", f"http://localhost:{share.server.port + 1}"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            ws(share, browser, origin=origin)
        assert refused.value.status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException):
        ws(share, None)  # no cookie
    sock = ws(share, browser)
    assert received(sock, 1) == [1]
    sock.close()


def test_wrong_codes_are_rate_limited_and_never_logged(share, store, caplog):
    caplog.set_level(logging.DEBUG)
    code = ShareCodes(store.path).new_code(SESSION, "rw")
    browser = join(share, code)  # a good one first: its code must not be logged either
    page = requests.get(f"{share.url}/join", params={"code": "x"})
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    statuses = []
    for i in range(FAILURES_ALLOWED + 1):
        r = requests.post(f"{share.url}/join", data={"code": f"wrong{i}", "_xsrf": xsrf},
                          cookies=page.cookies, allow_redirects=False)  # fmt: skip
        statuses.append(r.status_code)
    assert statuses == [403] * FAILURES_ALLOWED + [429]
    # Even the right code waits now: guessing cannot go on.
    r = requests.post(f"{share.url}/join", data={"code": code, "_xsrf": xsrf},
                      cookies=page.cookies, allow_redirects=False)  # fmt: skip
    assert r.status_code == 429
    # What the server logs (the client's own urllib3 debug lines hold the URLs it asked for).
    logged = "\n".join(r.getMessage() for r in caplog.records
                       if r.name.startswith(("omnikernel", "tornado", "jupyter")))  # fmt: skip
    assert "wrong0" not in logged and code not in logged
    assert browser.cookies["omk_share"] not in logged
    assert "/join" in logged  # the access log is there, only without the codes


def test_revoking_closes_open_sockets_and_refuses_cookies(share, store):
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
    assert ro.get(f"{share.url}/live").status_code == 403
    add(store, EventKind.TEXT, text="after")
    assert received(rw_sock, 2) == [2]  # the co-drive link goes on
    assert rw.get(f"{share.url}/live").status_code == 200
    rw_sock.close()


def test_an_expired_link_and_cookie_are_refused(share, store, clock):
    codes = ShareCodes(store.path, clock=clock)
    code = codes.new_code(SESSION, "ro", ttl_s=60)
    browser = join(share, code)
    assert browser.get(f"{share.url}/live").status_code == 200
    clock.now += 61
    assert browser.get(f"{share.url}/live").status_code == 403
    page = requests.get(f"{share.url}/join", params={"code": code})
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
    again = requests.post(f"{share.url}/join", data={"code": code, "_xsrf": xsrf},
                          cookies=page.cookies, allow_redirects=False)  # fmt: skip
    assert again.status_code == 403


def test_late_joiner_and_reconnect_get_exactly_what_they_missed(share, store):
    browser = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    for i in range(10):
        add(store, EventKind.TEXT, text=f"part {i}")
    early = ws(share, browser, since=0)
    assert received(early, 10) == list(range(1, 11))
    late = ws(share, browser, since=4)  # a phone that had seen 1..4
    assert received(late, 10) == list(range(5, 11))
    for i in range(3):
        add(store, EventKind.TEXT, text=f"more {i}")
    assert received(early, 13) == [11, 12, 13]
    assert received(late, 13) == [11, 12, 13]
    late.close()
    add(store, EventKind.TEXT, text="while away")
    back = ws(share, browser, since=13)
    assert received(back, 14) == [14]
    early.close()
    back.close()


def test_agent_text_reaches_the_page_only_sanitised(share, store):
    add(store, EventKind.TEXT, text="**hi** <script>alert(1)</script><img src=x onerror=alert(2)>")
    add(store, EventKind.TOOL_CALL, tool="Bash<b>", summary="echo '<script>x</script>'")
    browser = join(share, ShareCodes(store.path).new_code(SESSION, "ro"))
    sock = ws(share, browser)
    messages: list[dict[str, Any]] = []
    while len(messages) < 2:
        messages += json.loads(sock.recv())["events"]
    text, call = messages[0]["html"], messages[1]["html"]
    assert "<strong>hi</strong>" in text
    assert "<script" not in text and "<img" not in text and "&lt;script&gt;" in text
    assert "<script" not in call and "&lt;script&gt;" in call and "Bash&lt;b&gt;" in call
    sock.close()


def test_the_sandbox_cannot_reach_the_share_server(backend, box, share):  # noqa: F811
    port = share.server.port
    tcp = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED"
    assert "CONNECTED" in run(None, tcp, spec_for(box))[1]  # unsandboxed, it is reachable
    assert "CONNECTED" not in run(backend, tcp, spec_for(box))[1]


def test_with_a_certificate_it_serves_https_only_and_cookies_are_secure(store, clock, tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed; install it with: apt-get install -y openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)  # fmt: skip
    running = Running(store.path, clock, certfile=str(cert), keyfile=str(key))
    try:
        assert running.url.startswith("https://")
        code = ShareCodes(store.path).new_code(SESSION, "ro")
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{running.server.port}/join", params={"code": code})
        browser = requests.Session()
        trust = str(cert)  # per request: a CA bundle in the environment overrides a session's
        page = browser.get(f"{running.url}/join", params={"code": code}, verify=trust)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
        joined = browser.post(f"{running.url}/join", data={"code": code, "_xsrf": xsrf},
                              allow_redirects=False, verify=trust)  # fmt: skip
        assert joined.status_code == 303
        assert next(c for c in browser.cookies if c.name == "omk_share").secure
        assert browser.get(f"{running.url}/live", verify=trust).status_code == 200
    finally:
        running.stop()


def test_the_kernel_takes_the_page_answer_and_first_answer_wins(store):
    from omnikernel.approval import Decision
    from omnikernel.approvals import PendingApprovals
    from omnikernel.share_magics import watch_answers

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


def test_co_driver_prompts_need_co_drive_xsrf_and_a_notebook_taking_them(share, store, clock):
    codes = ShareCodes(store.path, clock=clock)
    body = {"text": "summarise the repository"}
    ro = join(share, codes.new_code(SESSION, "ro"))
    refused = ro.post(f"{share.url}/api/prompt", json=body,
                      headers={"X-XSRFToken": ro.cookies["_xsrf"]})  # fmt: skip
    assert refused.status_code == 403 and "read-only" in refused.text
    rw = join(share, codes.new_code(SESSION, "rw"))
    good = {"X-XSRFToken": rw.cookies["_xsrf"], "Origin": share.url}
    assert rw.post(f"{share.url}/api/prompt", json=body).status_code == 403  # no XSRF token
    cross = rw.post(f"{share.url}/api/prompt", json=body,
                    headers={**good, "Origin": "http://evil.example"})  # fmt: skip
    assert cross.status_code == 403
    # No kernel shows the session's feed: said at once, nothing queued to run by surprise.
    nobody = rw.post(f"{share.url}/api/prompt", json=body, headers=good)
    assert nobody.status_code == 409 and "%share" in nobody.json()["result"]
    assert codes.take_prompt(SESSION) is None
    codes.feed_opened(SESSION)  # this test process plays the kernel showing the feed
    for bad, status in (({"text": "  "}, 400), ({"txt": "x"}, 400), ({"text": "x" * 20001}, 413)):
        assert rw.post(f"{share.url}/api/prompt", json=bad, headers=good).status_code == status
    sent = rw.post(f"{share.url}/api/prompt", json=body, headers=good)
    assert sent.status_code == 202 and sent.json()["ahead"] == 0, sent.text
    second = rw.post(f"{share.url}/api/prompt", json={"text": "then test it"}, headers=good)
    assert second.json()["ahead"] == 1
    first = codes.take_prompt(SESSION)
    assert first.text == "summarise the repository" and first.source == "share page"
    assert first.who.startswith("co-drive at 127.0.0.1")
    assert codes.take_prompt(SESSION).text == "then test it"
    assert codes.take_prompt(SESSION) is None  # each is taken once
    # A prompt nobody took for ten minutes is dropped, not run by surprise later.
    rw.post(f"{share.url}/api/prompt", json=body, headers=good)
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
