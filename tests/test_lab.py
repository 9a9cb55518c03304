"""JupyterLab for real: the server with our extension, the Omnigent kernelspec, and a headless
Chromium that opens the quickstart and runs a prompt cell as a user would."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from omnikernel.store.sessions import SessionStore

from .conftest import REPO, free_port, jupyter_server, kernel_env, require_claude

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "omnikernel-test-token"


class Lab:
    def __init__(self, url: str, root: Path, store: Path):
        self.url, self.root, self.store = url, root, store

    def get(self, path: str) -> dict:
        request = urllib.request.Request(
            f"{self.url}{path}", headers={"Authorization": f"token {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    require_claude()
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "notebooks"
    shutil.copytree(REPO / "notebooks", root)
    env = kernel_env(tmp)
    env["JUPYTER_RUNTIME_DIR"] = str(tmp / "runtime")
    options = (
        "--ServerApp.disable_check_xsrf=False",
        f"--OmnikernelShare.port={free_port()}",
    )  # not 6767: tests may run side by side
    with jupyter_server("jupyterlab", tmp, root, env, TOKEN, *options) as url:
        yield Lab(url, root, Path(env["OMNIKERNEL_STORE"]))


def test_kernelspec_and_extension_are_installed(lab):
    specs = lab.get("/api/kernelspecs")["kernelspecs"]
    assert specs["omnikernel"]["spec"]["display_name"] == "Omnigent"
    assert isinstance(lab.get("/omnikernel/api/sessions")["sessions"], list)


def test_session_api_requires_auth(lab):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{lab.url}/omnikernel/api/sessions", timeout=10)
    assert err.value.code == 403


def test_quickstart_prompt_streams_in_jupyterlab(lab):
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed; install it with: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{lab.url}/lab/tree/quickstart.ipynb?token={TOKEN}")
        cells = page.locator(".jp-NotebookPanel .jp-Cell")
        code_cells = page.locator(".jp-NotebookPanel .jp-CodeCell")
        expect(cells.first).to_be_visible(timeout=60_000)
        # The kernel named in the notebook starts on its own and reports idle.
        expect(page.locator(".jp-NotebookPanel-toolbar")).to_contain_text(
            "Omnigent", timeout=60_000
        )
        expect(page.get_by_text("Omnigent | Idle")).to_be_visible(timeout=90_000)

        def run_cell(source_start: str, shows: str) -> None:
            """Run a cell as a user does; a keystroke lost while Lab is busy is retyped."""
            cell = code_cells.filter(has_text=source_start).first
            for attempt in range(3):
                cell.scroll_into_view_if_needed()
                cell.locator(".jp-InputArea-editor").click()
                page.keyboard.press("Shift+Enter")
                try:
                    expect(cell.locator(".jp-OutputArea")).to_contain_text(shows, timeout=30_000)
                    return
                except AssertionError:
                    if attempt == 2:
                        page.screenshot(path=str(lab.root.parent / "failed.png"), full_page=True)
                        raise

        run_cell("%agents", "claude")
        # The agent asks to write hello.py: the card shows in the cell, the file is not there
        # until a person approves, and the turn goes on once they do.
        run_cell("Create a Python file hello.py", "Approval needed")
        prompt_cell = code_cells.filter(has_text="Create a Python file hello.py").first
        outputs = prompt_cell.locator(".jp-OutputArea")
        expect(outputs).to_contain_text("hello.py", timeout=30_000)
        assert not (lab.root / "hello.py").exists(), "the file was written before the approval"
        page.screenshot(path=str(lab.root.parent / "approval-card.png"), full_page=True)
        outputs.get_by_role("button", name="Approve").click()
        expect(outputs).to_contain_text("approved", timeout=30_000)
        expect(outputs).to_contain_text("Offline rehearsal model", timeout=90_000)
        expect(outputs).to_contain_text("Write", timeout=90_000)
        expect(outputs).to_contain_text("offline rehearsal model", timeout=90_000)  # the footer
        page.screenshot(path=str(lab.root.parent / "quickstart.png"), full_page=True)
        browser.close()
    assert (lab.root / "hello.py").is_file()
    sessions = lab.get("/omnikernel/api/sessions")["sessions"]
    (session,) = [s for s in sessions if s["notebook"].endswith("quickstart.ipynb")]
    events = lab.get(f"/omnikernel/api/sessions/{session['session_id']}/events?since=0")["events"]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "turn_start" and kinds[-1] == "turn_end"
    assert "tool_call" in kinds and "tool_result" in kinds
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    later = lab.get(f"/omnikernel/api/sessions/{session['session_id']}/events?since=3")["events"]
    assert [e["seq"] for e in later] == list(range(4, len(events) + 1))
    # JupyterLab's own session request got the notebook its file id: the session is the
    # notebook's, not its path's.
    store = SessionStore(lab.store)
    assert store.notebooks_of(session["session_id"]), "the kernel did not learn the notebook id"
    store.close()
