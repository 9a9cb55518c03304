"""The issue's promise in JupyterLab: a cell's agent asks; `%share`'s co-drive link, opened in
a phone-sized Chromium, shows the ask; a tap on Approve and the cell in JupyterLab completes,
its card saying who decided and from where. Then the phone sends a prompt: it runs as a turn of
the notebook's session and its answer appears in the notebook, in the session feed under
`%share`, while no cell runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import require_cli
from .test_lab import CHROMIUM, CHROMIUM_ARGS, TOKEN, lab  # noqa: F401  (the fixture)
from .test_lab_control import notebook
from .test_share_phone import PHONE, SCENARIO


def test_a_phone_approves_a_cell_running_in_jupyterlab(lab):
    require_cli("claude")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed; install it with: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    folder = "share-phone"
    work = lab.root / folder
    work.mkdir()
    (work / "shared.rehearsal.json").write_text(json.dumps(SCENARIO))
    cells = ["%agent claude", "%share", "Please create the notes file."]
    (work / "shared.ipynb").write_text(json.dumps(notebook(cells)))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(
            f"{lab.url}/lab/workspaces/{folder}/tree/{folder}/shared.ipynb?reset&token={TOKEN}"
        )
        code_cells = page.locator(".jp-NotebookPanel .jp-CodeCell")
        expect(page.get_by_text("Omnigent | Idle")).to_be_visible(timeout=90_000)
        links = code_cells.nth(1).locator("a[href*='/join?code=']")
        for attempt in range(6):  # Run All does nothing until the kernel is connected
            page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
            page.locator(".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))").click()
            try:
                expect(links).to_have_count(2, timeout=15_000)
                break
            except AssertionError:
                if attempt == 5:
                    raise
        co_drive = links.nth(1).get_attribute("href")
        assert co_drive and "/join?code=" in co_drive and TOKEN not in co_drive
        expect(code_cells.nth(1).locator("img[alt*='QR code']")).to_have_count(2)

        phone = browser.new_context(**PHONE).new_page()
        phone.goto(co_drive)
        phone.tap("#join")
        approve = phone.locator("#pending button.approve")
        expect(approve).to_be_visible(timeout=120_000)
        cell = code_cells.nth(2)
        expect(cell.locator("button:has-text('Approve')")).to_be_visible(timeout=30_000)
        approve.tap()
        out = cell.locator(".jp-OutputArea")
        expect(out).to_contain_text(
            "approved by co-drive at 127.0.0.1 (share page)", timeout=60_000
        )
        expect(out).to_contain_text("Created notes.txt.", timeout=90_000)
        expect(cell.locator("button:has-text('Approve')")).to_be_disabled()
        expect(phone.locator("#pending .card")).to_have_count(0)

        phone.fill("#prompt", "What did the team decide?")
        phone.tap("#send")
        expect(phone.locator("#asked")).to_contain_text("Sent", timeout=10_000)
        feed = code_cells.nth(1).locator(".jupyter-widgets.widget-output")
        expect(feed).to_contain_text("co-drive at 127.0.0.1 (share page)", timeout=60_000)
        expect(feed).to_contain_text("The team chose the notes file.", timeout=90_000)
        expect(phone.locator("#feed")).to_contain_text(
            "The team chose the notes file.", timeout=30_000
        )
        expect(phone.locator("#feed")).to_contain_text("from co-drive at 127.0.0.1")
        browser.close()
    assert (work / "notes.txt").read_text().strip() == "remembered"
