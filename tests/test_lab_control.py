"""The seed's examples in JupyterLab, driven by headless Chromium, with every harness: after
`npm install`, the agent's `git push` asks in the cell and clicking Approve while the cell runs
lets it happen; past a spend threshold the agent pauses until Continue is clicked."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from .conftest import require_cli
from .test_kernel_control import SCENARIO, git, project
from .test_lab import CHROMIUM, CHROMIUM_ARGS, TOKEN, lab  # noqa: F401  (the fixture)


def notebook(cells: list[str]) -> dict:
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "omnikernel", "display_name": "Omnigent", "language": "markdown"}
        },
        "cells": [
            {
                "cell_type": "code",
                "id": f"c{i}",
                "metadata": {},
                "source": src,
                "outputs": [],
                "execution_count": None,
            }
            for i, src in enumerate(cells)
        ],
    }


@pytest.mark.parametrize(
    ("harness", "front_end"),
    [("claude", "lab"), ("codex", "lab"), ("pi", "lab"), ("claude", "notebook7")],
)
def test_approve_clicked_while_the_cell_runs_lets_the_push_happen(lab, harness, front_end):
    require_cli(harness)
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed; install it with: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    folder = f"control-{harness}-{front_end}"
    work = lab.root / folder
    work.mkdir()
    remote = project(work)
    # The offline rehearsal model plays this script (`<notebook>.rehearsal.json` beside it).
    # Rehearsal calls cost $0; the script prices them as a real model on purpose, so the
    # pause every $0.0001 below has spend to count.
    priced = {**SCENARIO, "price_as": "anthropic/claude-sonnet-4-5"}
    (work / "control.rehearsal.json").write_text(json.dumps(priced))
    cells = [
        f"%agent {harness}",
        "%autoapprove on",
        "Please install the package.",
        "Please push the work.",
        "%policy add pause-every 0.0001",
        "Which file did you create?",
    ]
    (work / "control.ipynb").write_text(json.dumps(notebook(cells)))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        if front_end == "lab":
            # A workspace of its own, so tabs from earlier tests are not restored around it.
            page.goto(
                f"{lab.url}/lab/workspaces/{folder}/tree/{folder}/control.ipynb?reset&token={TOKEN}"
            )
        else:  # Notebook 7, served by the same server
            page.goto(f"{lab.url}/notebooks/{folder}/control.ipynb?token={TOKEN}")
        code_cells = page.locator(".jp-NotebookPanel .jp-CodeCell")
        expect(code_cells.first).to_be_visible(timeout=60_000)
        if front_end == "lab":
            expect(page.get_by_text("Omnigent | Idle")).to_be_visible(timeout=90_000)
        switched = code_cells.first.locator(".jp-OutputArea")
        for attempt in range(6):  # Run All does nothing until the kernel is connected
            page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
            page.locator(".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))").click()
            try:
                expect(switched).to_contain_text(f"Switched to {harness}", timeout=15_000)
                break
            except AssertionError:
                if attempt == 5:
                    raise
        push_cell = code_cells.filter(has_text="Please push the work.").first
        approve = push_cell.locator("button:has-text('Approve')")
        try:
            expect(approve).to_be_visible(timeout=120_000)
        except AssertionError:
            page.screenshot(path=str(lab.root.parent / f"failed-{folder}.png"), full_page=True)
            raise
        out = push_cell.locator(".jp-OutputArea")
        expect(out).to_contain_text("push-after-install", timeout=10_000)
        # The cell is still running (the agent waits) and nothing is pushed yet.
        assert git(work, "--git-dir", str(remote), "branch") == ""
        approve.click()
        expect(out).to_contain_text("approved by", timeout=60_000)
        expect(out).to_contain_text("Push step finished.", timeout=90_000)
        expect(push_cell.locator("button:has-text('Approve')")).to_be_disabled()
        # Spend is past the pause amount: each model call waits for Continue (a tiny amount
        # pauses every call, so click each card as it comes until the answer arrives).
        last = code_cells.filter(has_text="Which file did you create?").first
        out = last.locator(".jp-OutputArea")
        expect(last.locator("button:has-text('Continue')").first).to_be_visible(timeout=120_000)
        expect(out).to_contain_text("pause-every 0.0001")
        deadline = time.monotonic() + 120
        while "Earlier I created" not in out.inner_text():  # (notes.txt may render as a link)
            assert time.monotonic() < deadline, out.inner_text()
            waiting = last.locator("button:has-text('Continue'):not([disabled])")
            if waiting.count():
                waiting.first.click()
            page.wait_for_timeout(300)
        expect(out).to_contain_text("pause: continued")
        page.screenshot(path=str(lab.root.parent / f"approval-{folder}.png"), full_page=True)
        browser.close()
    assert "main" in git(work, "--git-dir", str(remote), "branch")
