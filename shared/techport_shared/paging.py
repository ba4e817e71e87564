"""Pages of a list or a search (contract section 5): at most `limit` items (50 unless asked, at most 200),
in a stable order, and an opaque cursor that asks for the page after.

A cursor is the last key of the page, so a page is a `key > cursor ORDER BY key LIMIT n` query: it costs the
same on the thousandth page as on the first, and a record added or removed meanwhile neither repeats nor
skips another. It is opaque because its form is ours to change; it is no credential (who may see what is
checked on every page, the first or the hundredth).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Generic, TypeVar

from fastapi import HTTPException, Query
from pydantic import BaseModel

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"items a page, at most {MAX_LIMIT}")]
Cursor = Annotated[str | None, Query(min_length=1, max_length=200, description="`next_cursor` of a page")]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    # The cursor of the next page; null on the last.
    next_cursor: str | None = None


def cursor_after(key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": key}).encode()).decode().rstrip("=")


def key_after(cursor: str | None) -> str | None:
    """The key a cursor names (None for the first page); a cursor we did not make is a 422 on `cursor`."""
    if cursor is None:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        key = decoded["after"] if isinstance(decoded, dict) else None
    except (binascii.Error, ValueError, KeyError):
        key = None
    if not isinstance(key, str) or not key:
        detail = [{"type": "value_error", "loc": ["query", "cursor"], "msg": "not a cursor of this list"}]
        raise HTTPException(422, detail=detail)
    return key


def page(items: list[dict[str, Any]], key: str, limit: int) -> dict[str, Any]:
    """The page of the first `limit` of `items`, read with one more when a page follows: its cursor is then
    the `key` of the page's last item."""
    after = items[limit - 1][key] if len(items) > limit else None
    return {"items": items[:limit], "next_cursor": cursor_after(after) if after else None}
