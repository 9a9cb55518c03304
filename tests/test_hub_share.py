"""The share page under a JupyterHub user's server (jupyter_ext.hub), on a real local hub.

alice's session is in her store (as her kernel writes it); grants to bob, carol or a group are
made as `%share with` makes them: a JupyterHub share of alice's server through the hub API with
her server's token, and a grant row in her store. Every request goes through the hub's proxy."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from omnikernel.events import Event, EventKind
from omnikernel.store.sessions import SessionStore
from omnikernel.store.shares import ShareCodes
from omnikernel.testing.hub import LocalHub

pytestmark = pytest.mark.slow

SESSION = "s-hub"


@pytest.fixture(scope="module")
def alice(local_hub: LocalHub) -> dict[str, Any]:
    url = local_hub.start_server("alice")
    store = SessionStore(local_hub.workdir / "home/alice/.omnikernel/sessions.sqlite3")
    store.open_session(SESSION, "work.ipynb")
    return {"url": url, "store": store, "codes": ShareCodes(store.path)}


def page(alice: dict[str, Any], path: str) -> str:
    return f"{alice['url']}omnikernel/share/{path}?session={SESSION}"


def as_user(hub: LocalHub, user: str) -> requests.Session:
    """A client with a fresh token of `user` (made after the shares it should carry)."""
    client = requests.Session()
    client.headers["Authorization"] = f"token {hub.token_of(user)}"
    return client


def share(hub: LocalHub, alice: dict[str, Any], person: str, role: str) -> None:
    whom = {"group": person[6:]} if person.startswith("group:") else {"user": person}
    hub.api("POST", "/hub/api/shares/alice/", whom, token=hub.token_of("alice"))
    alice["codes"].share_with(SESSION, person, role)


def test_only_the_named_people_get_the_page_and_nothing_else(local_hub, alice):
    hub = local_hub
    # carol: no hub share, so alice's server's sign-in refuses her before our code runs.
    hub.api("PATCH", "/hub/api/shares/alice/", {"user": "carol"}, token=hub.token_of("alice"))
    carol = as_user(hub, "carol")
    assert carol.get(page(alice, "api/grant")).status_code == 403
    alice["codes"].revoke_person(SESSION, "bob")  # whatever another test of the module left
    alice["codes"].revoke_person(SESSION, "group:data-team")
    # bob, let through the sign-in by a hub share but granted nothing in this session: 403.
    hub.api("POST", "/hub/api/shares/alice/", {"user": "bob"}, token=hub.token_of("alice"))
    bob = as_user(hub, "bob")
    refused = bob.get(page(alice, "api/grant"))
    assert refused.status_code == 403 and "may not follow" in refused.text
    # Read-only: he sees the page and the session, may not answer or prompt.
    alice["codes"].share_with(SESSION, "bob", "ro")
    me = bob.get(page(alice, "api/grant"))
    assert me.status_code == 200, me.text
    assert me.json()["role"] == "ro" and me.json()["who"] == "bob"
    assert not me.json()["may_answer"]
    live = bob.get(page(alice, "live"))
    assert live.status_code == 200 and 'data-mode="hub"' in live.text
    assert "script-src 'self'" in live.headers["Content-Security-Policy"]
    assert bob.get(f"{alice['url']}omnikernel/share/static/live.js").status_code == 200
    ro_answer = bob.post(page(alice, "api/answer"), json={"request_id": "r1", "allow": True})
    assert ro_answer.status_code == 403
    # And nothing of alice's besides: files, notebooks, kernels, sessions, terminals.
    for path in ("api/contents", "api/contents/work.ipynb", "api/kernels", "api/sessions",
                 "api/terminals", "files/work.ipynb", "omnikernel/api/sessions"):  # fmt: skip
        assert bob.get(alice["url"] + path).status_code == 403, path
    assert bob.post(alice["url"] + "api/kernels", json={}).status_code == 403
    assert bob.post(alice["url"] + "api/terminals", json={}).status_code == 403
    # Another session of alice's stays closed to him.
    other = bob.get(f"{alice['url']}omnikernel/share/api/grant?session=s-other")
    assert other.status_code == 403


def test_a_co_driver_answers_as_their_hub_name(local_hub, alice):
    hub = local_hub
    store, codes = alice["store"], alice["codes"]
    store.append(
        Event(
            EventKind.APPROVAL_REQUEST,
            {"request_id": "r-co", "tool": "Bash", "summary": "git push"},
            session_id=SESSION,
            harness="claude",
            turn=1,
        )
    )
    share(hub, alice, "bob", "rw")
    bob = as_user(hub, "bob")
    assert bob.get(page(alice, "api/grant")).json()["may_answer"]
    sent = bob.post(page(alice, "api/answer"), json={"request_id": "r-co", "allow": True})
    assert sent.status_code == 202, sent.text
    assert codes.take_answer(SESSION, "r-co") == (True, "bob", "share page")
    # Even a co-driver's body is capped, refused unread.
    big = bob.post(page(alice, "api/answer"), json={"request_id": "r" * 2000, "allow": True})
    assert big.status_code == 413 and "at most" in big.text, big.text
    assert codes.take_answer(SESSION, "r" * 2000) is None
    # The owner follows her own sessions without a grant, and may always answer.
    mine = as_user(hub, "alice").get(page(alice, "api/grant"))
    assert mine.status_code == 200 and mine.json()["who"] == "alice"
    assert mine.json()["may_answer"] and mine.json()["role"] == "rw"


def test_a_group_grant_lets_its_members_in_and_no_one_else(local_hub, alice):
    """The page's group check. Both are let through the sign-in by a hub share of their own:
    a JupyterHub share *with the group* does not reach its members' tokens in JupyterHub
    6.1.1 (`get_scopes_for` adds a token owner's own shares, not their groups'), so the
    sign-in would refuse bob before the page was asked (docs/sharing.md)."""
    hub = local_hub
    codes = alice["codes"]
    codes.revoke_person(SESSION, "bob")
    for user in ("bob", "carol"):
        hub.api("POST", "/hub/api/shares/alice/", {"user": user}, token=hub.token_of("alice"))
    codes.share_with(SESSION, "group:data-team", "ro")
    bob, carol = as_user(hub, "bob"), as_user(hub, "carol")
    assert bob.get(page(alice, "api/grant")).status_code == 200  # bob is in data-team
    assert carol.get(page(alice, "api/grant")).status_code == 403  # carol is not
    codes.revoke_person(SESSION, "group:data-team")
    assert bob.get(page(alice, "api/grant")).status_code == 403


def test_revoking_closes_an_open_page_and_the_socket_wants_its_origin(local_hub, alice):
    hub = local_hub
    alice["store"].append(
        Event(
            EventKind.APPROVAL_REQUEST,
            {"request_id": "r-ws", "tool": "Bash", "summary": "make test"},
            session_id=SESSION,
            harness="claude",
            turn=1,
        )
    )
    share(hub, alice, "bob", "ro")
    token = hub.token_of("bob")
    ws_url = page(alice, "ws").replace("http://", "ws://") + "&since=0"
    header = [f"Authorization: token {token}"]
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(ws_url, header=header, suppress_origin=True, timeout=20)
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(ws_url, header=header, origin="http://evil.example", timeout=20)
    sock = websocket.create_connection(
        ws_url, header=header, origin=hub.url, subprotocols=["omk-share"], timeout=20
    )
    try:
        first = json.loads(sock.recv())
        assert any(e["kind"] == "approval_request" for e in first["events"])
        deadline = time.monotonic() + 30  # pages opened are written to the store each tick
        while not alice["codes"].watchers(SESSION) and time.monotonic() < deadline:
            time.sleep(0.05)
        watchers = alice["codes"].watchers(SESSION)
        assert [w["who"] for w in watchers] == ["bob"]
        alice["codes"].revoke_person(SESSION, "bob")
        while True:  # the server closes it on its next tick, saying why
            frame = sock.recv_data_frame(control_frame=True)[1]
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                break
        assert int.from_bytes(frame.data[:2], "big") == 4403
        assert b"revoked" in frame.data
        sock.close()
        deadline = time.monotonic() + 30
        while alice["codes"].watchers(SESSION) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alice["codes"].watchers(SESSION) == []  # %share no longer lists him
    finally:
        sock.close()


def test_without_omnikernels_authorizer_the_page_refuses_to_share(tmp_path: Path) -> None:
    """The attempt the Authorizer stops: with Jupyter Server's default, a hub share gives the
    visitor alice's whole server (her kernels, here); the share page then refuses to serve."""
    with LocalHub(tmp_path / "hub", server_args=[]) as hub:
        url = hub.start_server("alice")
        hub.api("POST", "/hub/api/shares/alice/", {"user": "bob"}, token=hub.token_of("alice"))
        bob = as_user(hub, "bob")
        assert bob.get(url + "api/kernels").status_code == 200  # the hole, without it
        refused = bob.get(f"{url}omnikernel/share/api/grant?session={SESSION}")
        assert refused.status_code == 503 and "authorizer_class" in refused.text


def test_the_share_magics_against_the_hub(local_hub, alice, start_kernel, workdir):
    """`%share with`, `%share`, `%share revoke NAME` in a kernel that believes it runs in
    alice's server (her hub environment), against the real hub's API."""
    hub = local_hub
    kernel = start_kernel(
        workdir,
        JUPYTERHUB_USER="alice",
        JUPYTERHUB_API_URL=f"{hub.url}/hub/api",
        JUPYTERHUB_API_TOKEN=hub.token_of("alice"),
        JUPYTERHUB_SERVICE_PREFIX="/user/alice/",
        OMNIKERNEL_STORE=str(alice["store"].path),
    )
    shared = kernel.execute("%share with carol --co-drive").text
    assert "Shared session" in shared and "carol (co-drive" in shared, shared
    assert "/user/alice/omnikernel/share/live?session=" in shared
    shares = hub.api("GET", "/hub/api/shares/alice/", token=hub.token_of("alice"))["items"]
    assert "carol" in [s["user"]["name"] for s in shares if s.get("user")]
    listed = kernel.execute("%share").text
    assert "Shared with: carol (co-drive)" in listed and "Nobody is watching" in listed, listed
    unknown = kernel.execute("%share with nobody-such").text
    assert "Could not share with nobody-such" in unknown and "the hub answered" in unknown
    bad = kernel.execute("%share with 'bob smith'").text
    assert "not a hub user or group name" in bad
    assert "the hub answered" not in bad  # refused before any call
    revoked = kernel.execute("%share revoke carol").text
    assert "carol no longer has access" in revoked, revoked
    shares = hub.api("GET", "/hub/api/shares/alice/", token=hub.token_of("alice"))["items"]
    assert "carol" not in [s["user"]["name"] for s in shares if s.get("user")]
    again = kernel.execute("%share revoke carol").text
    assert "is not shared with carol" in again
    assert kernel.alive()


def test_sharing_by_name_outside_a_hub_says_so(start_kernel, workdir):
    kernel = start_kernel(workdir)
    said = kernel.execute("%share with bob").text
    assert "needs JupyterHub" in said and "`%share` makes links" in said
    assert kernel.alive()
