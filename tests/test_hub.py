"""A real JupyterHub (omnikernel.testing.hub): it starts, serves a user's server through its
proxy, and a hub share of alice's server lets bob reach nothing of hers but the share page."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from omnikernel.testing.hub import LocalHub


def status(url: str, token: str, method: str = "GET") -> int:
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None)
    request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_a_shared_server_gives_visitors_nothing_of_the_owners(local_hub: LocalHub) -> None:
    hub = local_hub
    alice_url = hub.start_server("alice")
    alice = hub.token_of("alice")
    bob = hub.token_of("bob")
    assert status(alice_url + "api/contents", alice) == 200
    # Without a share the single-user server's sign-in refuses bob outright.
    assert status(alice_url + "api/contents", bob) == 403
    hub.api("POST", "/hub/api/shares/alice/", {"user": "bob"}, token=alice)
    bob = hub.token_of("bob")  # a token made after the share carries it
    # With one, Jupyter Server's default Authorizer would give him everything; ours, none
    # of alice's files, notebooks, kernels, sessions or terminals.
    for path, method in (
        ("api/contents", "GET"),
        ("api/contents/secret.txt", "GET"),
        ("api/kernels", "GET"),
        ("api/kernels", "POST"),
        ("api/sessions", "GET"),
        ("api/terminals", "GET"),
        ("api/terminals", "POST"),
        ("files/secret.txt", "GET"),
    ):
        assert status(alice_url + path, bob, method) == 403, (path, method)
    assert status(alice_url + "api/kernels", alice) == 200
