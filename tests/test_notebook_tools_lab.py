"""A cell the agent proposes (the notebook server's ``notebook_insert_cell``) appears below the
running cell in JupyterLab and in Notebook 7, in headless Chromium, not run: the kernel's
``set_next_input`` payload, with no front-end extension."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import free_port, jupyter_server, kernel_env, require_claude
from .test_lab import CHROMIUM, CHROMIUM_ARGS, TOKEN

PROPOSED = "df.plot(x='month', y='sales')"
SCENARIO = {
    "rules": [
        {
            "match": "propose a plot",
            "steps": [
                {
                    "tool_calls": [
                        {
                            "mcp": "notebook.notebook_insert_cell",
                            "input": {"source": PROPOSED, "type": "code"},
                        }
                    ]
                },
                {"text": "Proposed a plotting cell."},
            ],
        }
    ]
}


def notebook(path: Path) -> None:
    cells = [
        "%%python\nimport pandas as pd\ndf = pd.DataFrame({'month': [1, 2], 'sales': [3, 4]})\n"
        "print('ready')",
        "Please propose a plot of df.",
        "%%python\nprint('the last cell')",
    ]
    path.write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "id": f"cell-{i}",
                        "metadata": {},
                        "execution_count": None,
                        "outputs": [],
                        "source": source,
                    }
                    for i, source in enumerate(cells)
                ],
                "metadata": {
                    "kernelspec": {
                        "name": "omnikernel",
                        "display_name": "Omnigent",
                        "language": "markdown",
                    }
                },
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )
    path.with_suffix(".rehearsal.json").write_text(json.dumps(SCENARIO))


@pytest.mark.slow
@pytest.mark.parametrize("front_end", ["lab", "notebooks"])
def test_a_proposed_cell_appears_below_the_running_one(front_end, tmp_path):
    require_claude()
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed; install it with: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    root = tmp_path / "root"
    root.mkdir()
    notebook(root / "plots.ipynb")
    env = kernel_env(tmp_path)
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    options = ("--ServerApp.disable_check_xsrf=False", f"--OmnikernelShare.port={free_port()}")
    with jupyter_server("jupyterlab", tmp_path, root, env, TOKEN, *options) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            path = "lab/tree" if front_end == "lab" else "notebooks"
            page.goto(f"{url}/{path}/plots.ipynb?token={TOKEN}")
            cells = page.locator(".jp-Notebook .jp-CodeCell")
            expect(cells).to_have_count(3, timeout=60_000)

            def run(index: int, shows: str) -> None:
                cell = cells.nth(index)
                for attempt in range(3):
                    # A run asked before the kernel was up (a loaded machine) leaves a
                    # kernel dialog over the page: close it, then run again.
                    if page.locator(".jp-Dialog").count():
                        page.keyboard.press("Escape")
                        expect(page.locator(".jp-Dialog")).to_have_count(0, timeout=10_000)
                    cell.locator(".jp-InputArea-editor").click()
                    page.keyboard.press("Shift+Enter")
                    try:
                        expect(cell.locator(".jp-OutputArea")).to_contain_text(
                            shows, timeout=90_000
                        )
                        return
                    except AssertionError:
                        if attempt == 2:
                            page.screenshot(path=str(tmp_path / "failed.png"), full_page=True)
                            raise

            if front_end == "lab":  # JupyterLab's toolbar names the kernel's state
                expect(page.get_by_text("Omnigent | Idle")).to_be_visible(timeout=120_000)
            run(0, "ready")  # the kernel started and runs Python
            run(1, "Proposed a plotting cell.")
            # A fourth cell, right below the prompt, holding the proposal, not run.
            expect(cells).to_have_count(4, timeout=30_000)
            proposed = cells.nth(2)
            expect(proposed.locator(".jp-InputArea-editor")).to_contain_text(PROPOSED)
            expect(proposed.locator(".jp-InputArea-editor")).to_contain_text("%%python")
            assert proposed.locator(".jp-OutputArea-output").count() == 0
            expect(cells.nth(3).locator(".jp-InputArea-editor")).to_contain_text("the last cell")
            page.screenshot(path=str(tmp_path / f"proposed-{front_end}.png"), full_page=True)
            browser.close()
