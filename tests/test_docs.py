"""The documentation: the README stays short and its links into docs/ resolve, and the Sphinx
site builds with no warning, executing the example notebooks against the offline rehearsal
model on the way (a cell error fails the build)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, require_claude, require_cli
from .test_layers import LAYERS

README = REPO / "README.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's (and MyST's `myst_heading_anchors`) anchor for a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of `page`'s headings, outside fenced code blocks."""
    found, fenced = set(), False
    for line in page.read_text().splitlines():
        if re.match(r"\s*(```|~~~)", line):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)$", line)):
            found.add(slug(m[1]))
    return found


def test_readme_is_under_250_lines():
    lines = len(README.read_text().splitlines())
    assert lines < 250, f"README.md has {lines} lines; move detail into docs/"


def test_every_readme_link_into_docs_resolves():
    links = [t for t in LINK.findall(README.read_text()) if t.startswith("docs/")]
    assert links, "the README links into docs/"
    broken = []
    for target in links:
        path, _, anchor = target.partition("#")
        page = REPO / path
        if not page.is_file():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(page):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, "\n".join(broken)


def test_the_architecture_page_lists_the_layers_in_order():
    text = (REPO / "docs" / "architecture.md").read_text()
    listed = re.findall(r"^\| `([\w.]+)` \|", text, flags=re.M)
    assert listed == LAYERS


def test_the_docs_build_without_warnings_and_run_the_notebooks(tmp_path):
    require_claude()
    for cli in ("codex", "pi", "npm"):
        require_cli(cli)
    out = tmp_path / "html"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(REPO / "docs"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-5000:]
    assert "WARNING:" not in build.stderr, build.stderr[-5000:]  # Sphinx's, not a kernel's log
    quickstart = (out / "notebooks" / "quickstart.html").read_text()
    assert "approved by" in quickstart and "$0 (rehearsal)" in quickstart
    assert (out / "_images").is_dir() or (out / "_static").is_dir()
    for page in (
        "usage",
        "sandbox",
        "policies",
        "sharing",
        "configuration",
        "architecture",
        "performance",
        "contributing",
    ):
        assert (out / f"{page}.html").is_file(), page
