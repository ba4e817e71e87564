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
# An id in a path: the contract's ids, and never a dot segment.
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,80}$")


@dataclass(frozen=True)
class Route:
    """A route of the contract (section 5): which methods, which service answers, whether a key is needed."""

    template: tuple[str, ...]  # segments; "{}" is an id
    methods: frozenset[str]
    service: str  # the service that answers (for the gateway's own routes: "gateway", or whom it asks)
    public: bool = False  # the signed token in an unsubscribe link is its own credential
    own: bool = False  # the gateway's own handler answers (keys); never forwarded as it is


def _route(path: str, methods: str, service: str, public: bool = False, own: bool = False) -> Route:
    segments = tuple("{}" if part.startswith("{") else part for part in path.strip("/").split("/"))
    return Route(segments, frozenset(methods.split()), service, public, own)


ROUTES: tuple[Route, ...] = (
    _route("organisations", "POST", "members", own=True),  # registered by members, its key minted here
    _route("organisations", "GET", "members"),
    _route("organisations/{id}", "GET", "members"),
    _route("organisations/{id}/api-keys", "POST", "gateway", own=True),
    _route("api-keys/{key_id}", "DELETE", "gateway", own=True),
    _route("students", "GET POST", "members"),
    _route("students/{id}", "GET PATCH DELETE", "members"),
    _route("students/{id}/matches", "GET", "matching"),
    _route("students/{id}/export", "GET", "members", own=True),  # every service's part, gathered here
    _route("vacancies", "GET POST", "members"),
    _route("vacancies/{id}", "GET", "members"),
    _route("vacancies/{id}/close", "POST", "members"),
    _route("vacancies/{id}/matches", "GET", "matching"),
    _route("partnerships", "GET POST", "matching"),
    _route("partnerships/{id}/accept", "POST", "matching"),
    _route("notifications", "GET", "notifications"),
    _route("unsubscribe", "GET POST", "notifications", public=True),
    _route("unsubscribe/undo", "POST", "notifications", public=True),
    _route("events", "POST", "members"),
)


@dataclass(frozen=True)
class Match:
    route: Route
    path: str  # the canonical path to forward, as the route names it
    ids: tuple[str, ...]


class NoRoute(LookupError):
    """No route of the contract: 404 (or 405 when the path is known but not the method)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def match(method: str, path: str, raw_path: bytes) -> Match:
    """The route a request asks for, matched on its decoded, normalised path (without /api/v1).

    Dot segments, empty segments and encoded separators never reach a service: `/a/../metrics` or
    `%2e%2e` or `a%2Fb` would otherwise name another route than the one the key was checked for."""
    lowered = raw_path.lower()
    if b"%2f" in lowered or b"%5c" in lowered or "\\" in path:
        raise NoRoute(404, "no such path")
    if path.startswith("/") or "//" in path:  # an empty segment (`/api/v1//x`, `a//b`)
        raise NoRoute(404, "no such path")
    segments = path.rstrip("/").split("/") if path.rstrip("/") else []
    if any(part in (".", "..") for part in segments):
        raise NoRoute(404, "no such path")
    known_path = False
    for route in ROUTES:
        if len(route.template) != len(segments):
            continue
        ids = []
        for expected, actual in zip(route.template, segments, strict=True):
            if expected == "{}":
                if not _ID.match(actual):
                    break
                ids.append(actual)
            elif expected != actual:
                break
        else:
            known_path = True
            if method in route.methods:
                return Match(route, "/".join(segments), tuple(ids))
    if known_path:
        raise NoRoute(405, f"{method} is not allowed here")
    raise NoRoute(404, "no such path")


def upstream(path: str) -> str | None:
    """Which service answers a public path (without /api/v1), for composing the OpenAPI document."""
    segments = tuple("{}" if part.startswith("{") else part for part in path.strip("/").split("/"))
    for route in ROUTES:
        if route.template == segments:
            return route.service
    return None


PUBLIC_PATHS = ("unsubscribe",)  # the signed token is the credential
