"""End to end: a kernel runs a cell whose agent asks to run a command; a phone-sized Chromium
on the co-drive link sees the ask and taps Approve; the cell goes on and completes. A read-only
viewer sees the same events and has no buttons."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from omnikernel.events import EventKind
from omnikernel.store.sessions import SessionStore
from omnikernel.testing import FakeModelServer, Scenario

from .conftest import require_cli
from .test_lab import CHROMIUM, CHROMIUM_ARGS
from .test_share import Clock, Running

SCENARIO = {"rules": [{"match": "create the notes file", "steps": [
    {"text": "Writing the notes.", "tool_calls": [
        {"action": "shell", "command": "echo remembered > notes.txt"}]},
    {"text": "Created notes.txt."},
]}, {"match": "what did the team decide", "steps": [{"text": "The team chose the notes file."}]}]}  # fmt: skip
PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True,
         "device_scale_factor": 2}  # fmt: skip
SCREENSHOT_NAME = "share-phone.png"  # docs/ holds the one the docs show


def feed_seqs(page) -> list[str]:
    """The sequence numbers of the events a share page's feed shows, in order."""
    return page.eval_on_selector_all("#feed .event", "els => els.map(e => e.dataset.seq)")


def test_a_phone_approves_a_running_cell(tmp_path, workdir, start_kernel):
    require_cli("claude")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed; install it with: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    store_path = tmp_path / "store" / "sessions.sqlite3"
    store_path.parent.mkdir(parents=True, exist_ok=True)
    share = Running(store_path, Clock())
    with FakeModelServer(Scenario.from_dict(SCENARIO)).start_in_thread() as model:
        kernel = start_kernel(
            workdir,
            ANTHROPIC_BASE_URL=model.base_url,
            ANTHROPIC_API_KEY="k",
            OMNIKERNEL_HARNESS="claude",
        )
        links = kernel.execute("%share").text
        assert "read-only" in links and "co-drive" in links, links
        ro_url, rw_url = re.findall(r"(http://127\.0\.0\.1:\d+/join\?code=[\w-]+)", links)
        assert ro_url.startswith(share.url) and rw_url.startswith(share.url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            phone = browser.new_context(**PHONE).new_page()
            viewer = browser.new_context(**PHONE).new_page()
            for page, url in ((phone, rw_url), (viewer, ro_url)):
                page.goto(url)
                page.tap("#join")
                expect(page.locator("#status")).to_have_text("live", timeout=15000)

            msg_id = kernel.kc.execute("Please create the notes file.")
            approve = phone.locator("#pending button.approve")
            expect(approve).to_be_visible(timeout=120000)
            expect(phone.locator("#pending pre")).to_contain_text("echo remembered > notes.txt")
            expect(viewer.locator("#pending .card")).to_contain_text("echo remembered")
            assert viewer.locator("#pending button").count() == 0  # read-only: nothing to tap
            box = approve.bounding_box()
            assert box and box["height"] >= 60 and box["width"] >= 150  # a thumb-sized button
            phone.screenshot(path=str(tmp_path / SCREENSHOT_NAME))

            store = SessionStore(store_path)
            tapped = time.monotonic()
            approve.tap()
            resumed = None
            while time.monotonic() - tapped < 30:
                if any(
                    store.events(s["session_id"], kinds=(EventKind.APPROVAL_DECISION,))
                    for s in store.sessions()
                ):
                    resumed = time.monotonic() - tapped
                    break
                time.sleep(0.01)
            assert resumed is not None, "the kernel never took the page's answer"
            print(f"tap-to-resume: {resumed * 1000:.0f} ms")
            assert resumed < 5

            result = kernel.collect(msg_id, timeout=120)
            assert result.status == "ok", result.text
            assert "approved by co-drive at 127.0.0.1 (share page)" in result.text, result.text
            assert (workdir / "notes.txt").read_text().strip() == "remembered"

            for page in (phone, viewer):
                expect(page.locator("#feed")).to_contain_text("Created notes.txt.", timeout=30000)
                expect(page.locator("#pending .card")).to_have_count(0)
            # Both pages show the same events once the last one (the turn's end) has reached
            # each; one may be a frame behind the other when the text above appears.
            deadline = time.monotonic() + 30
            while True:
                seqs = [feed_seqs(page) for page in (phone, viewer)]
                if seqs[0] == seqs[1] or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert seqs[0] == seqs[1] and len(seqs[0]) > 3
            assert "approved by co-drive" in viewer.locator("#feed").inner_text()
            watchers = kernel.execute("%share").text
            assert watchers.count("at 127.0.0.1 since") == 2, watchers
            bad = kernel.execute("%share revoke everyone")
            assert "takes ro, rw or all" in bad.text, bad.text
            revoked = kernel.execute("%share revoke rw")
            assert "Revoked 2 co-drive link(s)" in revoked.text, revoked.text
            expect(phone.locator("#status")).to_contain_text("revoked", timeout=10000)
            expect(viewer.locator("#status")).to_have_text("live")
            kernel.execute("%share revoke")
            expect(viewer.locator("#status")).to_contain_text("revoked", timeout=10000)
            browser.close()
    share.stop()
