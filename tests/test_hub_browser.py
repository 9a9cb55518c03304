"""The issue's promise on a real JupyterHub, in headless Chromium: alice runs a turn that asks
for approval and shares the session with bob as co-driver (``%share with bob --co-drive``);
bob signs in with the hub, follows it live on the page under alice's server and approves; alice's
cell goes on, its card saying "approved by bob". carol, signed in too, gets 403 and never sees
the session; bob cannot open alice's notebook, kernels or terminals; ``%share revoke bob``
closes bob's open page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnikernel.testing.hub import PASSWORD, LocalHub

from .conftest import require_cli
from .test_lab import CHROMIUM, CHROMIUM_ARGS
from .test_lab_control import notebook
from .test_share_phone import PHONE, SCENARIO

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def sign_in(browser, hub: LocalHub, user: str, **context):
    """A browser context signed in to the hub as `user` (its login form)."""
    page = browser.new_context(**context).new_page()
    page.goto(f"{hub.url}/hub/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("[type=submit]")
    page.wait_for_url(lambda url: "/hub/login" not in url, timeout=60_000)
    return page


def open_shared(page, url: str):
    """Open a URL under alice's server: the hub's OAuth may ask bob to confirm first."""
    response = page.goto(url)
    authorize = page.locator("form [type=submit]:has-text('Authorize')")
    if "/hub/api/oauth2/authorize" in page.url and authorize.count():
        with page.expect_navigation():
            authorize.click()
    return response


def test_bob_approves_alices_cell_through_the_hub(local_hub: LocalHub) -> None:
    require_cli("claude")
    require_cli("configurable-http-proxy")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed; install it with: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    hub = local_hub
    folder = hub.workdir / "home" / "alice" / "team"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shared.rehearsal.json").write_text(json.dumps(SCENARIO))
    cells = [
        "%agent claude",
        "%share with bob --co-drive",
        "Please create the notes file.",
        "%share revoke bob",
    ]
    (folder / "shared.ipynb").write_text(json.dumps(notebook(cells)))
    alice_url = hub.start_server("alice")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            alice = sign_in(browser, hub, "alice", viewport={"width": 1400, "height": 1000})
            alice.goto(f"{alice_url}lab/workspaces/team/tree/team/shared.ipynb?reset")
            code_cells = alice.locator(".jp-NotebookPanel .jp-CodeCell")
            expect(alice.get_by_text("Omnigent | Idle")).to_be_visible(timeout=120_000)
            links = code_cells.nth(1).locator("a[href*='omnikernel/share/live?session=']")
            for attempt in range(6):  # Run All does nothing until the kernel is connected
                alice.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
                alice.locator(
                    ".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))"
                ).click()
                try:
                    expect(links).to_have_count(1, timeout=15_000)
                    break
                except AssertionError:
                    if attempt == 5:
                        raise
            href = links.first.get_attribute("href") or ""
            assert href.startswith("/user/alice/omnikernel/share/live?session="), href
            shared_url = hub.url + href

            # carol, signed in with the hub but shared nothing: refused, sees nothing.
            carol = sign_in(browser, hub, "carol")
            refused = carol.goto(shared_url)
            assert refused is not None and refused.status == 403
            assert "Approval needed" not in carol.content()

            # bob, on a phone-sized page: signs in, follows live, sees the ask.
            bob = sign_in(browser, hub, "bob", **PHONE)
            open_shared(bob, shared_url)
            expect(bob.locator("#status")).to_have_text("live", timeout=30_000)
            expect(bob.locator("#rolename")).to_have_text("co-drive")
            approve = bob.locator("#pending button.approve")
            expect(approve).to_be_visible(timeout=120_000)
            # Being let into the session gives him nothing else of alice's server.
            for path in (
                "api/contents/team/shared.ipynb",
                "files/team/shared.ipynb",
                "api/kernels",
                "api/sessions",
                "api/terminals",
                "omnikernel/api/sessions",
            ):
                assert bob.request.get(alice_url + path).status == 403, path
            opened = bob.request.get(alice_url + "lab/tree/team/shared.ipynb")
            assert "Please create the notes file" not in opened.text()

            cell = code_cells.nth(2)
            expect(cell.locator("button:has-text('Approve')")).to_be_visible(timeout=30_000)
            approve.tap()
            out = cell.locator(".jp-OutputArea")
            expect(out).to_contain_text("approved by bob (share page)", timeout=60_000)
            expect(out).to_contain_text("Created notes.txt.", timeout=90_000)
            expect(bob.locator("#feed")).to_contain_text("approved by bob", timeout=30_000)

            # The last cell revokes bob: his open page closes and says so.
            expect(code_cells.nth(3).locator(".jp-OutputArea")).to_contain_text(
                "bob no longer has access", timeout=60_000
            )
            expect(bob.locator("#status")).to_contain_text("revoked", timeout=30_000)
            again = bob.request.get(shared_url.replace("/live?", "/api/grant?"))
            assert again.status == 403
        finally:
            browser.close()
    assert (folder / "notes.txt").read_text().strip() == "remembered"
