"""What a share request may carry in its body: checked strictly before anything acts on it.

A body is a JSON object with exactly the named fields, each of its exact type and within its
size; anything else is refused with a 400 that says what to send. Why so strict: a decision
must only ever be a real boolean (``bool("false")`` is True, so a lenient reading turned a
malformed denial into an approval), and a body is read only after the request showed its grant,
from a stream capped at the route's own size (`LIMITS`), so a client without a grant cannot make
the server buffer anything.
"""

from __future__ import annotations

import json
from typing import Any

#: The largest body each route reads (bytes). A prompt is at most `MAX_PROMPT_CHARS`
#: characters, which JSON in UTF-8 sends in at most 4 bytes each, plus the wrapping.
JOIN_BODY_BYTES = 1024
ANSWER_BODY_BYTES = 1024
PROMPT_BODY_BYTES = 4 * 20_000 + 1024
#: The most any request may send; the HTTP server refuses a larger declared length unread.
MAX_BODY_BYTES = PROMPT_BODY_BYTES

#: A request id is the harness's or the session's own (e.g. ``toolu_...``, ``pause-t3``).
MAX_REQUEST_ID_CHARS = 200
#: A share code is 43 characters (256 bits, base64url); a little room, no more.
MAX_CODE_CHARS = 100


class BodyError(ValueError):
    """The body is not what the route takes; the message says what to send."""


def parse(body: bytes, fields: dict[str, type], example: str) -> dict[str, Any]:
    """The JSON object in `body` if it has exactly `fields`, each of its type, else BodyError.

    `example` is what the refusal shows the client. Deep nesting cannot reach the parser's
    recursion limit within the route's size, but a RecursionError is refused like any other
    malformed body rather than allowed to escape as a 500."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BodyError(f"the body is not JSON: send {example}") from None
    if not isinstance(value, dict):
        raise BodyError(f"the body is not a JSON object: send {example}")
    if missing := [name for name in fields if name not in value]:
        raise BodyError(f"missing {', '.join(missing)}: send {example}")
    if extra := sorted(set(value) - set(fields)):
        raise BodyError(f"unknown field {', '.join(map(repr, extra))[:200]}: send {example}")
    for name, kind in fields.items():
        # bool is a subclass of int, and no field here takes an int: check the exact type.
        if type(value[name]) is not kind:
            raise BodyError(f"{name} must be a JSON {_json_name(kind)}: send {example}")
    return value


def _json_name(kind: type) -> str:
    return {bool: "boolean (true or false)", str: "string"}.get(kind, kind.__name__)


def answer(body: bytes) -> tuple[str, bool]:
    """An approval answer: the request it answers and a real boolean."""
    example = '{"request_id": "...", "allow": true} (or false)'
    value = parse(body, {"request_id": str, "allow": bool}, example)
    request_id = value["request_id"]
    if not request_id or len(request_id) > MAX_REQUEST_ID_CHARS:
        raise BodyError(f"request_id must be 1 to {MAX_REQUEST_ID_CHARS} characters")
    return request_id, value["allow"]


def prompt(body: bytes) -> str:
    """A co-driver's prompt (its length is checked by the handler, which says the limit)."""
    return parse(body, {"text": str}, '{"text": "your prompt"}')["text"]


def join(body: bytes) -> str:
    """The share code a confirmation page sends to exchange for a grant."""
    code = parse(body, {"code": str}, '{"code": "the code from your link"}')["code"]
    if len(code) > MAX_CODE_CHARS:
        raise BodyError("that is not a share code: open the link you were given")
    return code
