"""The gateway forwards only the contract's routes, matched on the decoded, normalised path; anything else is
404 before any service sees it (fast: no service runs). And what it caches: keys for a few seconds, identity
tokens while they have life left."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from techport_gateway import domain
from techport_gateway.api import Gateway
from techport_gateway.settings import GatewaySettings
from techport_gateway.store import KeyRepository, metadata
from techport_shared.identity import OPERATOR, organisation, verify_token


@pytest.mark.parametrize(
    ("method", "path", "raw", "service"),
    [
        ("GET", "students/s-1", b"/api/v1/students/s-1", "members"),
        ("GET", "students/s-1/matches", b"/api/v1/students/s-1/matches", "matching"),
        ("POST", "events", b"/api/v1/events", "members"),
        ("POST", "unsubscribe/undo", b"/api/v1/unsubscribe/undo", "notifications"),
        ("GET", "students/zh:2027.0042/export", b"/api/v1/students/zh:2027.0042/export", "members"),
    ],
)
def test_the_contracts_routes_are_found(method: str, path: str, raw: bytes, service: str) -> None:
    assert domain.match(method, path, raw).route.service == service


@pytest.mark.parametrize(
    ("method", "path", "raw", "status"),
    [
        ("GET", "partnerships/../metrics", b"/api/v1/partnerships/../metrics", 404),
        ("GET", "partnerships/./accept", b"/api/v1/partnerships/./accept", 404),
        ("GET", "students/a/b", b"/api/v1/students/a%2Fb", 404),  # an encoded slash is not a separator
        ("GET", "students/a\\b", b"/api/v1/students/a%5Cb", 404),
        ("GET", "metrics", b"/api/v1/metrics", 404),
        ("POST", "admin/reindex", b"/api/v1/admin/reindex", 404),
        ("GET", "internal/student-keys", b"/api/v1/internal/student-keys", 404),
        ("PUT", "students/s-1", b"/api/v1/students/s-1", 405),
        ("GET", "students/" + "x" * 81, b"", 404),
    ],
)
def test_anything_else_never_reaches_a_service(method: str, path: str, raw: bytes, status: int) -> None:
    with pytest.raises(domain.NoRoute) as refused:
        domain.match(method, path, raw)
    assert refused.value.status == status


@given(
    st.lists(st.sampled_from(["..", ".", "", "students", "s-1", "matches", "%2e%2e", "metrics"]), max_size=6)
)
@example(["students", "students", ""])  # a trailing slash: hypothesis found it once in a suite run
def test_a_path_with_a_dot_or_empty_segment_is_never_forwarded(segments: list[str]) -> None:
    path = "/".join(segments)
    try:
        matched = domain.match("GET", path, path.encode())
    except domain.NoRoute:
        return
    assert all(part not in ("", ".", "..") for part in matched.path.split("/"))
    # Forwarded exactly as the route names it; a trailing slash is dropped (`students/s-1/` is that student).
    assert matched.path == path.removesuffix("/")


async def test_keys_are_cached_for_seconds_and_identity_tokens_reused(tmp_path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import StaticPool
    from techport_shared.db import session_factory

    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    # Two seconds: the revocation's own transaction must fit inside it on a loaded CI machine (with 0.2 s it
    # did not, once).
    settings = GatewaySettings(operator_key="op-key", identity_secret="s" * 32, key_cache_s=2.0)
    gateway = Gateway.create(settings, session_factory(engine))
    async with gateway.sessions() as session:
        KeyRepository(session).add("abc123def456", "school-a", domain.digest("secret"))
        await session.commit()
    assert (await gateway.key("abc123def456")).revoked is False
    async with gateway.sessions() as session:
        await KeyRepository(session).revoke("abc123def456")
        await session.commit()
    assert (await gateway.key("abc123def456")).revoked is False  # cached, for a moment
    await asyncio.sleep(2.1)
    assert (await gateway.key("abc123def456")).revoked is True  # and then read again
    first = gateway.token(organisation("school-a"))
    assert gateway.token(organisation("school-a")) == first  # reused while it has life left
    assert gateway.token(OPERATOR) != first
    assert verify_token(first, "s" * 32).organisation_id == "school-a"
    await gateway.close()
    await engine.dispose()
