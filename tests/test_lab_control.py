"""The seed's example in JupyterLab, driven by headless Chromium: after `npm install`, the
agent's `git push` asks in the cell, and clicking Approve while the cell runs lets it happen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .test_kernel_control import SCENARIO, git, project
from .test_lab import CHROMIUM, CHROMIUM_ARGS, TOKEN, lab  # noqa: F401  (the fixture)


def notebook(cells: list[str]) -> dict:
    return {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "omnikernel", "display_name": "Omnigent",
                                    "language": "markdown"}},
        "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": src,
                   "outputs": [], "execution_count": None} for i, src in enumerate(cells)],
    }  # fmt: skip


def test_approve_clicked_while_the_cell_runs_lets_the_push_happen(lab):  # noqa: F811
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed; install it with: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    work = lab.root / "control"
    work.mkdir()
    remote = project(work)
    # The offline rehearsal model plays this script (`<notebook>.rehearsal.json` beside it).
    (work / "control.rehearsal.json").write_text(json.dumps(SCENARIO))
    cells = ["%autoapprove on", "Please install the package.", "Please push the work."]
    (work / "control.ipynb").write_text(json.dumps(notebook(cells)))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{lab.url}/lab/tree/control/control.ipynb?token={TOKEN}")
        code_cells = page.locator(".jp-NotebookPanel .jp-CodeCell")
        expect(code_cells.first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Omnigent | Idle")).to_be_visible(timeout=90_000)
        page.locator(".lm-MenuBar-itemLabel:text-is('Run')").click()
        page.locator(".lm-Menu-item:has(.lm-Menu-itemLabel:text-is('Run All Cells'))").click()
        push_cell = code_cells.filter(has_text="Please push the work.").first
        approve = push_cell.locator("button:has-text('Approve')")
        expect(approve).to_be_visible(timeout=120_000)
        out = push_cell.locator(".jp-OutputArea")
        expect(out).to_contain_text("push-after-install", timeout=10_000)
        # The cell is still running (the agent waits) and nothing is pushed yet.
        assert git(work, "--git-dir", str(remote), "branch") == ""
        approve.click()
        expect(out).to_contain_text("approved by", timeout=60_000)
        expect(out).to_contain_text("Push step finished.", timeout=90_000)
        expect(push_cell.locator("button:has-text('Approve')")).to_be_disabled()
        page.screenshot(path=str(lab.root.parent / "approval.png"), full_page=True)
        browser.close()
    assert "main" in git(work, "--git-dir", str(remote), "branch")
