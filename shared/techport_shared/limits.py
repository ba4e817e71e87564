"""The contract's bounds on input (section 1, "Limits"), and the checks that run before any parsing.

A record or HTTP event is at most 256 KiB and its JSON nests at most 32 deep. Both are checked on the raw
bytes, before `json.loads` ever sees them: a 50,000-deep document would otherwise exhaust the parser's
recursion before any model could refuse it. Everything that goes back out (rejections, dead letters, error
texts) is bounded here too, by construction: errors capped with a count, long values trimmed.
"""

from __future__ import annotations

import re

MAX_EVENT_BYTES = 256 * 1024
MAX_JSON_DEPTH = 32
MAX_BATCH_EVENTS = 500
# A batch body carries at most this many bytes: 500 small events, not 500 events of 256 KiB each.
MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_HEADERS_BYTES = 16 * 1024
# How many errors a rejection lists (the count says how many there were).
MAX_LISTED_ERRORS = 50
MAX_MESSAGE_CHARS = 300
MAX_FIELD_CHARS = 200
# An error text that goes into a header or an event (dlq_error, notification.failed's error).
MAX_ERROR_CHARS = 1000

# A string, or an unterminated one up to the end: every match starts at a quote and runs forward, so the
# scan is linear whatever the input (no restart inside a string that never closes).
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


# Control characters no text of ours carries: NUL (PostgreSQL cannot store it in text at all), escapes, the
# others of C0 and DEL. Tab and line breaks are allowed in text (they are whitespace); never in attributes.
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control(text: str, allow_whitespace: bool = True) -> bool:
    return (_CONTROL_IN_TEXT if allow_whitespace else _CONTROL).search(text) is not None


def plain_text(value: str) -> str:
    """A pydantic validator for text fields: refuses control characters, with a reason to act on."""
    if has_control(value):
        raise ValueError("contains a control character (such as NUL or ESC); tabs and line breaks are fine")
    return value


class InputTooLarge(ValueError):
    """Input over one of the contract's bounds; `field` names what, for rejections and 413/422 answers."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def json_depth(raw: bytes) -> int:
    """How deep the JSON document nests ([] and {}), without parsing it.

    Strings are cut out first (a bracket inside a string does not nest), then only the brackets are kept,
    so the loop runs over a few dozen bytes for an ordinary event and at most over the bounded input."""
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


def depth_of(value: object) -> int:
    """How deep a parsed JSON value nests (what `json_depth` finds in its text, before parsing)."""
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def check_json(raw: bytes, field: str = "data", max_bytes: int = MAX_EVENT_BYTES) -> None:
    """Refuse input over the size or depth bounds before it is parsed."""
    if len(raw) > max_bytes:
        raise InputTooLarge(field, f"is {len(raw)} bytes; at most {max_bytes} are accepted")
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return  # cannot nest deeper than it has brackets: an ordinary event is not scanned at all
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise InputTooLarge(field, f"nests {depth} deep; at most {MAX_JSON_DEPTH} levels are accepted")


def trim(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying that it was."""
    return text if len(text) <= limit else text[: max(0, limit - 14)] + " …(trimmed)"


def capped(errors: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
    """At most MAX_LISTED_ERRORS errors, each trimmed, and how many there were in all."""
    listed = [
        {"field": trim(e["field"], MAX_FIELD_CHARS), "message": trim(e["message"], MAX_MESSAGE_CHARS)}
        for e in errors[:MAX_LISTED_ERRORS]
    ]
    return listed, len(errors)
