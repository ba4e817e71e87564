"""Crypto-shredding: a student's personal fields travel sealed on the platform's own topics.

Members holds one key per student (AES-256-GCM, from `cryptography`). The personal fields of a student event
(names, address, postcode, location) are taken out of `data` and sealed under that key; the rest (level,
skills, consent, ...) stays readable, because matching needs it without asking anyone. A service that needs
the fields asks members for the key over an authenticated path (`StudentKeys`) and keeps its own copy, as
before. Erasure destroys the key: every copy of every record about the student, on any topic, replayed or
not, cannot be read from then on, and a consumer that meets such a record treats the student as erased.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import OrderedDict
from typing import Any

import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from techport_shared.events import PERSONAL_FIELDS
from techport_shared.identity import IDENTITY_HEADER, issue_token, service_identity
from techport_shared.logging import get_logger

log = get_logger(__name__)
SEALED = "sealed"
_VERSION = 1


class Shredded(Exception):
    """The key of the record's student is gone: the student was erased."""


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _aad(student_id: str) -> bytes:
    # The sealed part belongs to this student: moved to another student's event it does not open.
    return f"techport-student:{student_id}".encode()


def seal(data: dict[str, Any], key: bytes, key_id: str) -> dict[str, Any]:
    """`data` with its personal fields sealed under the student's key."""
    personal = {name: data[name] for name in PERSONAL_FIELDS if name in data}
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, json.dumps(personal).encode(), _aad(data["student_id"]))
    kept = {name: value for name, value in data.items() if name not in PERSONAL_FIELDS}
    kept[SEALED] = {
        "v": _VERSION,
        "alg": "A256GCM",
        "kid": key_id,
        "nonce": base64.b64encode(nonce).decode(),
        "ct": base64.b64encode(sealed).decode(),
    }
    return kept


def seal_bytes(value: bytes, key: bytes, student_id: str) -> bytes:
    """A whole record value sealed (a dead-lettered partner record about a student)."""
    nonce = os.urandom(12)
    box = {
        "v": _VERSION,
        "alg": "A256GCM",
        "student_id": student_id,
        "nonce": base64.b64encode(nonce).decode(),
        "ct": base64.b64encode(AESGCM(key).encrypt(nonce, value, _aad(student_id))).decode(),
    }
    return json.dumps({SEALED: box}).encode()


def is_sealed(data: dict[str, Any]) -> bool:
    return isinstance(data.get(SEALED), dict)


def key_id(data: dict[str, Any]) -> str | None:
    box = data.get(SEALED)
    return str(box.get("kid")) if isinstance(box, dict) and box.get("kid") else None


def open_sealed(data: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """The plain data of a sealed student event. Raises Shredded when the key is gone (or does not fit)."""
    if key is None:
        raise Shredded(str(data.get("student_id")))
    box = data[SEALED]
    try:
        plain = AESGCM(key).decrypt(
            base64.b64decode(box["nonce"]), base64.b64decode(box["ct"]), _aad(str(data["student_id"]))
        )
    except (InvalidTag, KeyError, ValueError, TypeError):
        raise Shredded(str(data.get("student_id"))) from None
    kept = {name: value for name, value in data.items() if name != SEALED}
    return {**kept, **json.loads(plain)}


class StudentKeys:
    """What a consumer asks members for: the keys of the students whose sealed events it reads, through
    members' internal route, with a signed service identity. Cached (bounded, for a few minutes); an erasure
    event drops the cached key at once."""

    def __init__(self, service: str, members_url: str, secret: str, cache_s: float = 300.0) -> None:
        self._service = service
        self._url = members_url.rstrip("/")
        self._secret = secret
        self._cache_s = cache_s
        self._cache: OrderedDict[str, tuple[bytes | None, float]] = OrderedDict()
        self._client: httpx.AsyncClient | None = None

    async def keys(self, wanted: dict[str, str]) -> dict[str, bytes | None]:
        """`wanted`: student id -> key id. Returns student id -> key (None: destroyed, the student erased)."""
        now = time.monotonic()
        found: dict[str, bytes | None] = {}
        missing: dict[str, str] = {}
        for student_id, kid in wanted.items():
            cached = self._cache.get(f"{student_id}/{kid}")
            if cached is not None and now - cached[1] < self._cache_s:
                found[student_id] = cached[0]
            else:
                missing[student_id] = kid
        if missing:
            fetched = await self._fetch(missing)
            for student_id, kid in missing.items():
                key = fetched.get(student_id)
                found[student_id] = key
                self._remember(f"{student_id}/{kid}", key, now)
        return found

    def forget(self, student_id: str) -> None:
        for cache_key in [k for k in self._cache if k.startswith(f"{student_id}/")]:
            del self._cache[cache_key]

    def _remember(self, cache_key: str, key: bytes | None, now: float) -> None:
        self._cache[cache_key] = (key, now)
        self._cache.move_to_end(cache_key)
        while len(self._cache) > 50_000:
            self._cache.popitem(last=False)

    async def _fetch(self, wanted: dict[str, str]) -> dict[str, bytes | None]:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self._url, timeout=10)
        token = issue_token(service_identity(self._service), self._secret, 60)
        response = await self._client.post(
            "/internal/student-keys",
            json={"keys": [{"student_id": s, "key_id": k} for s, k in wanted.items()]},
            headers={IDENTITY_HEADER: token},
        )
        if response.status_code >= 500:  # members unavailable: the consumer retries (a transient failure)
            raise ConnectionError(f"members answered {response.status_code} for student keys")
        response.raise_for_status()
        keys = response.json()["keys"]
        return {s: (base64.b64decode(k) if k else None) for s, k in keys.items()}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
