"""Reading a push's ref updates from a real git pack, and refusing one in git's own format."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dulwich.protocol import pkt_line

from omnikernel.sandbox.git_push import (
    ZERO,
    Push,
    PushFormatError,
    read_pkt_lines,
    read_push,
    refusal,
)

pytestmark = pytest.mark.process  # real git builds the packs


def git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    env = {
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(repo), "PATH": "/usr/bin:/bin",
    }  # fmt: skip
    return subprocess.run(
        ["git", "-C", str(repo), *args], input=input, capture_output=True, check=True, env=env
    ).stdout


def commit(repo: Path, message: str) -> str:
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD").decode().strip()


def pack(repo: Path, new: str, *known: str) -> bytes:
    revs = "\n".join([new, *(f"^{k}" for k in known)]) + "\n"
    return git(repo, "pack-objects", "--stdout", "--revs", "--thin", input=revs.encode())


def body(commands: list[tuple[str, str, str]], data: bytes) -> bytes:
    caps = b"\0report-status side-band-64k agent=git/2"
    out = b""
    for i, (old, new, ref) in enumerate(commands):
        out += pkt_line(f"{old} {new} {ref}".encode() + (caps if i == 0 else b""))
    return out + pkt_line(None) + data


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    return tmp_path


def test_a_push_on_top_of_the_remote_branch_is_a_fast_forward(repo):
    a = commit(repo, "a")
    b = commit(repo, "b")
    c = commit(repo, "c")
    push = read_push(body([(a, c, "refs/heads/main")], pack(repo, c, a)))
    assert [(u.ref, u.old, u.new, u.kind) for u in push.updates] == [
        ("refs/heads/main", a, c, "fast-forward")
    ]
    assert b"report-status" in push.capabilities
    assert not push.updates[0].forced
    assert b in git(repo, "rev-list", c).decode()


def test_a_rewritten_history_is_a_force_update(repo):
    a = commit(repo, "a")
    b = commit(repo, "b")
    git(repo, "reset", "-q", "--hard", a)
    b2 = commit(repo, "b rewritten")
    # The pack goes back to what the server has (a): b is not on the way.
    push = read_push(body([(b, b2, "refs/heads/main")], pack(repo, b2, a)))
    assert push.updates[0].kind == "maybe-force"
    assert push.updates[0].forced
    # A whole unrelated history (the pack holds every commit back to its root): certainly force.
    git(repo, "checkout", "-q", "--orphan", "other")
    lone = commit(repo, "unrelated")
    assert read_push(body([(b, lone, "refs/heads/main")], pack(repo, lone))).updates[0].kind == (
        "force"
    )


def test_a_commit_the_server_has_already_cannot_be_shown_a_fast_forward(repo):
    a = commit(repo, "a")
    b = commit(repo, "b")
    push = read_push(body([(a, b, "refs/heads/main")], b""))  # empty pack: the server has b
    assert push.updates[0].kind == "maybe-force"


def test_creations_deletions_and_several_refs(repo):
    a = commit(repo, "a")
    b = commit(repo, "b")
    push = read_push(
        body(
            [
                (ZERO, b, "refs/heads/agent/x"),
                (a, ZERO, "refs/heads/old"),
                (ZERO, a, "refs/tags/v1"),
            ],
            pack(repo, b),
        )
    )
    assert [(u.branch, u.kind) for u in push.updates] == [
        ("agent/x", "create"), ("old", "delete"), ("refs/tags/v1", "create"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [b"", b"zzzz", b"0009abc", pkt_line(b"not a command") + pkt_line(None)],
)
def test_what_is_not_a_push_is_refused_as_unreadable(bad):
    with pytest.raises(PushFormatError):
        read_push(bad)


def test_a_refusal_is_a_report_status_inside_side_band_one_with_our_words_on_band_two(repo):
    a = commit(repo, "a")
    b = commit(repo, "b")
    push = read_push(body([(a, b, "refs/heads/main")], pack(repo, b, a)))
    out = refusal(push, {}, "Omnigent: main is not yours")
    lines, end = read_pkt_lines(out)
    assert end == len(out)
    assert lines[0] == b"\x02Omnigent: main is not yours\n"
    report, _ = read_pkt_lines(b"".join(line[1:] for line in lines if line[:1] == b"\x01"))
    assert report == [b"unpack ok\n", b"ng refs/heads/main Omnigent: main is not yours\n"]
    # Without side bands: the bare report.
    plain = Push(push.updates, ())
    assert read_pkt_lines(refusal(plain, {}, "no"))[0] == [
        b"unpack ok\n", b"ng refs/heads/main no\n"
    ]  # fmt: skip
