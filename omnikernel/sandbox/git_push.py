"""Reading a git smart-HTTP push on its way through the broker, and refusing one in git's words.

A ``git push`` over HTTPS is a ``POST .../git-receive-pack`` whose body is pkt-lines: one command
per ref (``old-id new-id refname``, the first carrying the client's capabilities after a NUL), a
flush, then the pack. `read_push` returns the ref updates and says for each whether it creates,
deletes, fast-forwards or force-updates the ref. A fast-forward is *shown*: walking parents from
the new commit through the commits in the pack reaches the old one. When the walk leaves the
pack first (the new commit is one the server has already, or the history passes through commits
the pack does not carry), the update is "maybe-force"; the broker then asks the remote for the
commits in between (`ancestry_request`) and `settled` makes it a fast-forward or a force
update. What stays "maybe-force" the policy treats with suspicion (it asks).

`refusal` is what the proxy answers instead of forwarding a refused push: a receive-pack
report-status (``ng REF reason`` per ref, and a ``remote:`` line through side band 2 when the
client asked for side bands), so git prints its own ``! [remote rejected] main -> main (...)``
with our reason in it, and exits non-zero.

pkt-line framing and pack parsing come from dulwich (a maintained pure-Python implementation of
git's formats): a push's pack may hold deltas and zlib streams, which are not ours to re-implement.
"""

from __future__ import annotations

import dataclasses
import io
from collections import deque

from dulwich.object_format import SHA1
from dulwich.objects import Commit
from dulwich.pack import PackData, PackInflater
from dulwich.protocol import pkt_line

ZERO = "0" * 40
SIDE_BANDS = (b"side-band-64k", b"side-band")


@dataclasses.dataclass(frozen=True)
class RefUpdate:
    ref: str
    old: str
    new: str
    #: "create", "delete", "fast-forward", "force" or "maybe-force" (see the module docstring).
    kind: str

    @property
    def branch(self) -> str:
        """The branch name for ``refs/heads/...``, else the full ref."""
        return self.ref.removeprefix("refs/heads/")

    @property
    def forced(self) -> bool:
        return self.kind in ("force", "maybe-force")

    def data(self) -> dict[str, str]:
        return {"ref": self.ref, "old": self.old, "new": self.new, "kind": self.kind}


@dataclasses.dataclass(frozen=True)
class Push:
    updates: tuple[RefUpdate, ...]
    capabilities: tuple[bytes, ...]
    #: The commits the pack carries, with their parents (what `walk` reads).
    commits: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict, compare=False)

    def boundary(self, update: RefUpdate) -> frozenset[str]:
        """Where the walk from `update`'s new commit leaves the pack: commits the server has."""
        return walk(update.old, update.new, self.commits)[1]


class PushFormatError(ValueError):
    """The body is not a receive-pack request."""


def read_pkt_lines(body: bytes) -> tuple[list[bytes], int]:
    """The pkt-lines up to the first flush, and the offset just past it."""
    lines: list[bytes] = []
    at = 0
    while True:
        if at + 4 > len(body):
            raise PushFormatError("the push ended before its flush packet")
        try:
            size = int(body[at : at + 4], 16)
        except ValueError:
            raise PushFormatError(f"not a pkt-line length: {body[at : at + 4]!r}") from None
        if size == 0:
            return lines, at + 4
        if size < 4 or at + size > len(body):
            raise PushFormatError(f"a pkt-line of length {size} does not fit")
        lines.append(body[at + 4 : at + size])
        at += size


def read_push(body: bytes) -> Push:
    """See the module docstring. Raises `PushFormatError` on a body that is not a push."""
    lines, end = read_pkt_lines(body)
    commands: list[tuple[str, str, str]] = []
    capabilities: tuple[bytes, ...] = ()
    for i, line in enumerate(lines):
        if line.startswith(b"shallow "):
            continue
        if i == 0 or not commands:
            line, _, caps = line.partition(b"\0")
            capabilities = tuple(caps.split())
        words = line.rstrip(b"\n").decode("utf-8", "replace").split(" ")
        if len(words) != 3 or len(words[0]) != len(words[1]):
            raise PushFormatError(f"not a ref update: {line[:100]!r}")
        commands.append((words[0], words[1], words[2]))
    parents = commit_parents(body[end:])
    updates = tuple(
        RefUpdate(ref, old, new, _kind(old, new, parents)) for old, new, ref in commands
    )
    return Push(updates, capabilities, parents)


def commit_parents(pack: bytes, strict: bool = False) -> dict[str, tuple[str, ...]]:
    """Each commit the pack carries (that can be read without outside delta bases): its parents."""
    if not pack.startswith(b"PACK"):
        return {}
    found: dict[str, tuple[str, ...]] = {}
    try:
        data = PackData.from_file(io.BytesIO(pack), SHA1, len(pack))
        # Deltas against objects inside the pack are resolved; a thin pack's deltas against
        # the server's objects cannot be, and those commits stay unknown (maybe-force).
        for obj in PackInflater.for_pack_data(data):
            if isinstance(obj, Commit):
                found[obj.id.decode()] = tuple(p.decode() for p in obj.parents)
    except Exception:  # a truncated or odd pack, outside bases: what was read is what is known
        if strict:
            raise
        return found
    return found


def _kind(old: str, new: str, parents: dict[str, tuple[str, ...]]) -> str:
    if old == ZERO or set(old) == {"0"}:
        return "create"
    if set(new) == {"0"}:
        return "delete"
    reached, left = walk(old, new, parents)
    if reached:
        return "fast-forward"
    return "maybe-force" if left else "force"


def walk(
    old: str, new: str, parents: dict[str, tuple[str, ...]], starts: frozenset[str] = frozenset()
) -> tuple[bool, frozenset[str]]:
    """Walk parents from `new` (and `starts`) through `parents`: whether `old` was reached, and
    the commits the walk met that `parents` does not hold (where it left the pack)."""
    todo = deque([new, *starts])
    seen, left = set(todo), set[str]()
    while todo:
        commit = todo.popleft()
        if commit == old:
            return True, frozenset(left)
        if commit not in parents:
            left.add(commit)
            continue
        for parent in parents[commit]:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return False, frozenset(left)


def ancestry_request(wants: frozenset[str], old: str, capabilities: tuple[bytes, ...]) -> bytes:
    """An upload-pack request (protocol v0) for what `wants` has and `old` has not: the commits
    between them, trees and blobs left out where the server filters (``filter tree:0``).
    Walking those from `wants` meets `old` exactly when `old` is an ancestor (`settled`)."""
    filtered = b"filter" in capabilities
    caps = b" side-band-64k ofs-delta no-progress agent=omnikernel-broker" + (
        b" filter" if filtered else b""
    )
    out = b""
    for i, want in enumerate(sorted(wants)):
        out += pkt_line(b"want " + want.encode() + (caps if i == 0 else b"") + b"\n")
    if filtered:
        out += pkt_line(b"filter tree:0\n")
    return out + pkt_line(None) + pkt_line(b"have " + old.encode() + b"\n") + pkt_line(b"done\n")


def pack_of_upload_response(body: bytes) -> bytes:
    """The pack in an upload-pack response (after its ACK/NAK, in side band 1)."""
    at, pack = 0, b""
    while at + 4 <= len(body):
        try:
            size = int(body[at : at + 4], 16)
        except ValueError:
            break
        if size == 0:
            at += 4
            continue
        line = body[at + 4 : at + size]
        at += size
        if line[:1] == b"\x01":
            pack += line[1:]
        elif line[:1] == b"\x03" or line.startswith(b"ERR "):
            raise PushFormatError(line.lstrip(b"\x03").decode("utf-8", "replace").strip())
    if not pack.startswith(b"PACK"):
        raise PushFormatError("the server sent no pack")
    return pack


def settled(update: RefUpdate, push: Push, fetched: bytes) -> str:
    """`update`'s kind once the server's commits between its boundary and the old commit
    (`fetched`, an upload-pack response) are known: "fast-forward" or "force"; unchanged when
    those still do not tell."""
    if update.kind != "maybe-force":
        return update.kind
    try:
        parents = {**push.commits, **commit_parents(pack_of_upload_response(fetched), strict=True)}
    except Exception:  # an error, a truncated or unreadable pack: still unknown
        return update.kind
    # The server sent every commit its wants reach that the old commit does not; so the walk
    # leaves only by commits the old one reaches, and meets the old one itself exactly when it
    # is an ancestor of the new.
    return "fast-forward" if walk(update.old, update.new, parents)[0] else "force"


def refusal(push: Push, reasons: dict[str, str], message: str) -> bytes:
    """A receive-pack result refusing every ref of `push` (`reasons` by ref, else `message`)."""
    report = pkt_line(b"unpack ok\n")
    for update in push.updates:
        reason = reasons.get(update.ref, message)
        report += pkt_line(f"ng {update.ref} {_one_line(reason)}\n".encode())
    report += pkt_line(None)
    if not any(band in push.capabilities for band in SIDE_BANDS):
        return report
    limit = 65515 if b"side-band-64k" in push.capabilities else 995
    out = b""
    for line in message.splitlines() or [message]:
        out += pkt_line(b"\x02" + f"{line}\n".encode())
    for at in range(0, len(report), limit):
        out += pkt_line(b"\x01" + report[at : at + limit])
    return out + pkt_line(None)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
