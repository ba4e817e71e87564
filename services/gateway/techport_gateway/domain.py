"""API keys and routing rules of the gateway. No I/O.

A key is `tpk_<key id>_<secret>`: the key id finds the record, the secret is checked against its SHA-256 (a
random 256-bit secret needs no slow hash). Keys are shown once, when minted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

_KEY = re.compile(r"^tpk_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class MintedKey:
    key_id: str
    key: str
    digest: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def mint() -> MintedKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return MintedKey(key_id, f"tpk_{key_id}_{secret}", digest(secret))


def parse(key: str) -> tuple[str, str] | None:
    match = _KEY.match(key)
    return (match.group(1), match.group(2)) if match else None


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


SERVICES = ("members", "matching", "notifications")


def upstream(path: str) -> str | None:
    """Which service answers a public path (without /api/v1)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    head = parts[0]
    if head in ("students", "vacancies") and len(parts) == 3 and parts[2] == "matches":
        return "matching"
    if head == "partnerships":
        return "matching"
    if head in ("notifications", "unsubscribe"):
        return "notifications"
    if head in ("organisations", "students", "vacancies"):
        return "members"
    return None


PUBLIC_PATHS = ("unsubscribe",)  # the signed token is the credential
