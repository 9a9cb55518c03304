"""Agent text renders without naming anything the browser would fetch: a table of every
exfiltration form, checked against the invariant of `omnikernel.view.sanitize` (the only URL-bearing
attributes are ``a href`` and inlined ``data:image`` sources), plus the images the session
produced, which are the one thing inlined."""

from __future__ import annotations

import os
import re
import struct
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from omnikernel.events import Event, EventKind
from omnikernel.kernel.magics.common import table
from omnikernel.view import render
from omnikernel.view.sanitize import SessionImages, agent_bundle, render_markdown

PROBE = "http://127.0.0.1:9/probe"

ALLOWED_TAGS = {
    "div", "p", "h1", "h2", "h3", "h4", "h5", "h6", "em", "strong", "s", "code", "pre", "ul",
    "ol", "li", "blockquote", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "a",
    "img", "span", "sub", "details", "summary",
}  # fmt: skip
ALIGN = re.compile(r"text-align:(left|right|center)")
DATA_IMAGE = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=]+")


class Markup(HTMLParser):
    """Every tag and attribute of an HTML fragment, and its visible text."""

    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        self.text.append(data)

    @property
    def visible(self) -> str:
        return "".join(self.text)


def assert_fetches_nothing(source: str) -> Markup:
    """The invariant: known tags only; URLs only in `a href` and inlined data images."""
    markup = Markup(source)
    for tag, attrs in markup.tags:
        assert tag in ALLOWED_TAGS, f"<{tag}> in {source}"
        for name, value in attrs.items():
            if (
                name == "class"
                or (tag == "img" and name == "alt")
                or (tag, name) == ("ol", "start")
            ):
                continue
            if tag == "a" and name in ("href", "rel", "target", "referrerpolicy"):
                continue
            if tag == "img" and name == "src":
                assert DATA_IMAGE.fullmatch(value), f"img src {value[:80]}"
                continue
            if tag in ("th", "td") and name == "style":
                assert ALIGN.fullmatch(value), value
                continue
            raise AssertionError(f"<{tag} {name}={value!r}> in {source}")
    return markup


def links(markup: Markup) -> list[str]:
    return [attrs["href"] for tag, attrs in markup.tags if tag == "a"]


# (what, agent text, the probe URL must be visible as text, clickable link targets)
FORMS = [
    ("markdown image", f"![chart]({PROBE}/md?d=S)", True, [f"{PROBE}/md?d=S"]),
    ("markdown image with title", f'![c]({PROBE}/t "{PROBE}/title")', True, [f"{PROBE}/t"]),
    ("reference-style image", f"![chart][r]\n\n[r]: {PROBE}/ref?d=S", True, [f"{PROBE}/ref?d=S"]),
    ("collapsed reference image", f"![r][]\n\n[r]: {PROBE}/coll", True, [f"{PROBE}/coll"]),
    ("shortcut reference image", f"![r]\n\n[r]: {PROBE}/short", True, [f"{PROBE}/short"]),
    ("protocol-relative image", "![x](//127.0.0.1:9/pr)", True, ["//127.0.0.1:9/pr"]),
    ("entity-obfuscated image", "![x](&#104;ttp://127.0.0.1:9/ent)", True, [f"{PROBE[:-6]}/ent"]),
    ("image inside a link", f"[![x]({PROBE}/in)]({PROBE}/out)", True, None),
    ("model-written data: image", "![x](data:image/png;base64,iVBORw0KGgo=)", False, []),
    ("<img>", f'<img src="{PROBE}/img?d=S" onerror="alert(1)">', True, []),
    ("<img srcset>", f'<img srcset="{PROBE}/srcset 1x">', True, []),
    ("<picture>/<source srcset>", f'<picture><source srcset="{PROBE}/pic"><img src="x"></picture>', True, []),
    ("CSS url() in style attribute", f'<div style="background:url({PROBE}/css)">x</div>', True, []),
    ("CSS url() in <style>", f"<style>body{{background:url({PROBE}/style)}}</style>", True, []),
    ("CSS @import", f'<style>@import "{PROBE}/import";</style>', True, []),
    ("<link>", f'<link rel="stylesheet" href="{PROBE}/link">', True, []),
    ("<link rel=prefetch>", f'<link rel="prefetch" href="{PROBE}/prefetch">', True, []),
    ("<iframe>", f'<iframe src="{PROBE}/iframe"></iframe>', True, []),
    ("<video poster>", f'<video poster="{PROBE}/poster"></video>', True, []),
    ("<audio src>", f'<audio src="{PROBE}/audio" autoplay></audio>', True, []),
    ("<object>", f'<object data="{PROBE}/object"></object>', True, []),
    ("<embed>", f'<embed src="{PROBE}/embed">', True, []),
    ("SVG href", f'<svg><image href="{PROBE}/svg"/></svg>', True, []),
    ("SVG xlink:href", f'<svg><use xlink:href="{PROBE}/use#a"/></svg>', True, []),
    ("<input type=image>", f'<input type="image" src="{PROBE}/input">', True, []),
    ("table background", f'<table background="{PROBE}/bg"><tr><td>x</td></tr></table>', True, []),
    ("meta refresh", f'<meta http-equiv="refresh" content="0;url={PROBE}/meta">', True, []),
    ("<base>", f'<base href="{PROBE}/base/">', True, []),
    ("<a ping>", f'<a href="x" ping="{PROBE}/ping">x</a>', True, []),
    ("HTML block", f'<div>\n<img src="{PROBE}/block">\n</div>', True, []),
    ("autolink", f"<{PROBE}/auto?d=S>", True, [f"{PROBE}/auto?d=S"]),
    ("ordinary link", f"[the docs]({PROBE}/docs)", True, [f"{PROBE}/docs"]),
    ("reference link", f"[docs][d]\n\n[d]: {PROBE}/refdocs", True, [f"{PROBE}/refdocs"]),
    ("javascript: link", "[x](javascript:alert(1))", False, []),
    ("bare URL", f"see {PROBE}/bare", True, []),
    ("HTML in inline code", f"`<img src={PROBE}/code>`", True, []),
    ("HTML in a fenced block", f"```html\n<img src={PROBE}/fence>\n```", True, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "text", "url_visible", "targets"), FORMS, ids=[f[0] for f in FORMS]
)
def test_no_exfiltration_form_makes_the_browser_fetch(what, text, url_visible, targets):
    markup = assert_fetches_nothing(render_markdown(text))
    if url_visible:
        assert "127.0.0.1:9/" in markup.visible, f"{what}: the URL is not shown"
    if targets is not None:
        assert links(markup) == targets, what
    if what.endswith("image") and "data:" not in text:
        assert "not loaded" in markup.visible


HARMLESS = {"model-written data: image", "autolink", "ordinary link", "reference link",
            "javascript: link", "bare URL", "HTML in inline code", "HTML in a fenced block"}  # fmt: skip


@pytest.mark.parametrize("form", [f for f in FORMS if f[0] not in HARMLESS], ids=lambda f: f[0])
def test_the_check_catches_each_attack_when_rendered_unprotected(form):
    """Without the protection (Markdown with raw HTML, as a browser renderer takes it), every
    attack form breaks the invariant: the table above tests something that can fail."""
    from markdown_it import MarkdownIt

    with pytest.raises(AssertionError):
        assert_fetches_nothing(MarkdownIt("commonmark", {"html": True}).render(form[1]))


def test_links_show_their_real_target():
    markup = assert_fetches_nothing(render_markdown(f"[harmless docs]({PROBE}/x?d=S)"))
    assert markup.visible == f"harmless docs ({PROBE}/x?d=S)\n"
    (a,) = [attrs for tag, attrs in markup.tags if tag == "a"]
    assert "noreferrer" in a["rel"] and a["target"] == "_blank"
    # A link whose text is its target is not repeated.
    assert Markup(render_markdown(f"<{PROBE}/y>")).visible == f"{PROBE}/y\n"


def test_output_still_reads_well():
    text = (
        "## Result\n\n1. first\n2. **second** with `code`\n\n| a | b |\n|--:|---|\n| 1 | 2 |\n\n"
        "```python\nprint('<b>hi</b>')\n```\n\n> quoted ~~old~~\n"
    )
    markup = assert_fetches_nothing(render_markdown(text))
    tags = [t for t, _ in markup.tags]
    for tag in ("h2", "ol", "li", "strong", "code", "table", "th", "td", "pre", "blockquote", "s"):
        assert tag in tags
    assert "print('<b>hi</b>')" in markup.visible


def png(width: int = 1, height: int = 1) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "notebooks"
    root.mkdir()
    (tmp_path / "outside.png").write_bytes(png())
    old = root / "old.png"
    old.write_bytes(png())
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    return root


@pytest.mark.parametrize(
    ("why", "src", "inlined"),
    [
        ("a PNG the session wrote in the folder", "chart.png", True),
        ("the same, as ./ path", "./chart.png", True),
        ("the same, percent-encoded name", "my%20chart.png", True),
        ("the same, absolute path inside the folder", "{root}/chart.png", True),
        ("a file from before the session", "old.png", False),
        ("a file outside the folder", "../outside.png", False),
        ("a symlink inside pointing outside", "link.png", False),
        ("an SVG the session wrote (a document that may name URLs)", "drawing.svg", False),
        ("a .png that is not an image", "fake.png", False),
        ("too big", "big.png", False),
        ("missing", "nope.png", False),
        ("a remote URL", f"{PROBE}/chart.png", False),
        ("a file: URL", "file://{root}/chart.png", False),
        ("with a query", "chart.png?x=1", False),
    ],
)
def test_only_images_the_session_produced_are_inlined(folder, why, src, inlined):
    images = SessionImages(folder, since=time.time() - 60, max_bytes=10_000)
    (folder / "chart.png").write_bytes(png())
    (folder / "my chart.png").write_bytes(png())
    (folder / "link.png").symlink_to(folder.parent / "outside.png")
    (folder / "drawing.svg").write_text(f'<svg><image href="{PROBE}/svg"/></svg>')
    (folder / "fake.png").write_text("not a png")
    (folder / "big.png").write_bytes(png(200, 200)[:8] + os.urandom(20_000))
    markup = assert_fetches_nothing(render_markdown(f"![chart]({src.format(root=folder)})", images))
    srcs = [attrs["src"] for tag, attrs in markup.tags if tag == "img"]
    assert bool(srcs) == inlined, why
    if not inlined:  # shown as a link (or, for a file: URL, as text) naming the file
        assert src.split("/")[-1].split("?")[0] in markup.visible


def test_inlined_images_are_capped_per_rendering(folder):
    images = SessionImages(folder, since=0, max_bytes=10_000)
    (folder / "a.png").write_bytes(png(40, 40) + b"\x00" * 6000)
    many = "\n\n".join("![a](a.png)" for _ in range(5000))
    srcs = [a for t, a in Markup(render_markdown(many, images)).tags if t == "img"]
    assert 0 < len(srcs) < 5000


PAYLOAD = f'![x]({PROBE}/md) <img src="{PROBE}/img"> <iframe src="{PROBE}/if"></iframe>'


def test_every_bundle_of_agent_text_is_sanitized():
    """Answers, tool calls and results, approvals, notices (handoff details), errors, footers
    and tables (`%history`) all carry safe HTML and never the agent's Markdown."""
    shown: list[dict] = []
    view = render.CellView(lambda b, **kw: shown.append(b), lambda b, **kw: shown.append(b))
    view.show(Event(EventKind.TEXT, {"text": PAYLOAD}))
    view.flush_text()
    bundles = shown + [
        render.tool_call_bundle({"tool": PAYLOAD, "action": "exec", "summary": PAYLOAD}),
        render.tool_call_bundle(
            {"tool": "Write", "action": "write", "summary": PAYLOAD, "input": {"content": PAYLOAD}}
        ),
        render.tool_result_bundle({"output": PAYLOAD}),
        render.approval_bundle(
            {"tool": PAYLOAD, "summary": PAYLOAD}, {"decision": "deny", "reason": PAYLOAD}
        ),
        render.notice_bundle({"message": PAYLOAD, "details": PAYLOAD}),
        render.error_bundle({"message": PAYLOAD, "hint": PAYLOAD}),
        render.footer_bundle(PAYLOAD, {"model": PAYLOAD}, {"status": PAYLOAD}, False),
        table(["prompt"], [[PAYLOAD]]),
        agent_bundle(PAYLOAD),
    ]
    for bundle in bundles:
        assert set(bundle) == {"text/plain", "text/html"}, bundle
        markup = assert_fetches_nothing(bundle["text/html"])
        assert "127.0.0.1:9/" in markup.visible
