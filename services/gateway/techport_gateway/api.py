"""The one HTTP entrance: `/api/v1/...` with API keys, per-key rate limits, the caller's identity passed on as
a signed short-lived token, and routing to members, matching and notifications over pooled clients.

Only the contract's routes are forwarded, matched on the decoded, normalised path (`domain.match`); anything
else is 404 here, before any service sees it. Keys are looked up once and cached for a few seconds (a revoked
key stops working within GATEWAY_KEY_CACHE_S), and an identity token is reused while it has life left.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from techport_shared.db import SessionFactory
from techport_shared.identity import (
    IDENTITY_HEADER,
    OPERATOR,
    Identity,
    issue_token,
    organisation,
    service_identity,
)
from techport_shared.logging import get_logger
from techport_shared.web import REQUEST_ID_HEADER, EntityId, request_id_of

from techport_gateway import domain
from techport_gateway.settings import GatewaySettings
from techport_gateway.store import KeyRepository
from techport_gateway.upstream import Answer, Upstreams, UpstreamUnavailable

log = get_logger(__name__)
_FORWARDED_HEADERS = ("content-type", "accept", "accept-language")
# A person's browser may show what a service answers (the unsubscribe page): nothing runs, nothing sniffs.
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class Caller:
    identity: Identity
    key_id: str  # "operator" or the organisation key's id: what rate limits count


@dataclass
class _KnownKey:
    organisation_id: str
    key_hash: str
    revoked: bool
    checked_at: float


@dataclass
class Gateway:
    settings: GatewaySettings
    sessions: SessionFactory
    upstreams: Upstreams
    limiter: SlidingWindowCounterRateLimiter
    rate_limits: list[RateLimitItem]
    _keys: dict[str, _KnownKey] = field(default_factory=dict)
    _tokens: dict[tuple[str, str | None, str | None], tuple[str, float]] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: GatewaySettings, sessions: SessionFactory) -> Gateway:
        urls = {
            "members": settings.members_url,
            "matching": settings.matching_url,
            "notifications": settings.notifications_url,
        }
        upstreams = Upstreams(urls, settings.upstream_timeout_s)
        # A sliding window of two counters per key, in memory: O(1) a request. limits' asyncio storage: its
        # synchronous one starts a timer thread every 10 ms to expire counters, and each start takes the GIL
        # from the requests. (The moving window keeps every hit and expires them in a thread: measured at a
        # tenth of the gateway's time.) Limits are per gateway replica.
        limiter = SlidingWindowCounterRateLimiter(MemoryStorage())
        return cls(settings, sessions, upstreams, limiter, parse_many(settings.rate_limit))

    async def close(self) -> None:
        await self.upstreams.close()

    async def key(self, key_id: str) -> _KnownKey | None:
        """The key's record, from the cache while it is fresh: a revocation holds within the cache time."""
        now = time.monotonic()
        known = self._keys.get(key_id)
        if known is not None and now - known.checked_at < self.settings.key_cache_s:
            return known
        async with self.sessions() as session:
            row = await KeyRepository(session).get(key_id)
        if row is None:
            self._keys.pop(key_id, None)
            return None
        if len(self._keys) > 10_000:
            self._keys.clear()  # a bound, whatever keys are tried
        known = _KnownKey(row.organisation_id, row.key_hash, row.revoked_at is not None, now)
        self._keys[key_id] = known
        return known

    def forget_key(self, key_id: str) -> None:
        self._keys.pop(key_id, None)

    def token(self, identity: Identity) -> str:
        """A signed identity token, reused while it has more than a third of its life left."""
        cache_key = (identity.role, identity.organisation_id, identity.service)
        now = time.time()
        found = self._tokens.get(cache_key)
        ttl = self.settings.identity_ttl_s
        if found is not None and found[1] - now > ttl / 3:
            return found[0]
        token = issue_token(identity, self.settings.identity_secret.get_secret_value(), ttl)
        if len(self._tokens) > 10_000:
            self._tokens.clear()
        self._tokens[cache_key] = (token, now + ttl)
        return token


async def gateway(request: Request) -> Gateway:
    found: Gateway = request.app.state.gateway
    return found


async def authenticate(request: Request, gw: Annotated[Gateway, Depends(gateway)]) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise HTTPException(
            401,
            detail="an API key is needed: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if domain.same(key, gw.settings.operator_key.get_secret_value()):
        caller = Caller(OPERATOR, "operator")
    else:
        parsed = domain.parse(key)
        known = await gw.key(parsed[0]) if parsed is not None else None
        if (
            parsed is None
            or known is None
            or known.revoked
            or not domain.same(domain.digest(parsed[1]), known.key_hash)
        ):
            raise HTTPException(
                401, detail="unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        caller = Caller(organisation(known.organisation_id), parsed[0])
    for limit in gw.rate_limits:
        if not await gw.limiter.hit(limit, caller.key_id):
            stats = await gw.limiter.get_window_stats(limit, caller.key_id)
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            raise HTTPException(
                429, detail=f"rate limit {limit} exceeded", headers={"Retry-After": str(retry_after)}
            )
    return caller


Authenticated = Annotated[Caller, Depends(authenticate)]
Service = Annotated[Gateway, Depends(gateway)]
router = APIRouter(prefix="/api/v1")


async def forward(
    gw: Gateway,
    request: Request,
    matched: domain.Match,
    identity: Identity | None,
    body: bytes | None = None,
    method: str | None = None,
) -> Answer:
    """Send the request on to the service the route names, at the route's canonical path."""
    service = matched.route.service
    headers = {name: value for name in _FORWARDED_HEADERS if (value := request.headers.get(name))}
    if matched.route.template == ("events",):
        # The CloudEvents HTTP binding's binary mode carries the event's attributes as ce-* headers.
        headers.update(
            {name: value for name, value in request.headers.items() if name.lower().startswith("ce-")}
        )
    headers[REQUEST_ID_HEADER] = request_id_of(request)
    if identity is not None:
        headers[IDENTITY_HEADER] = gw.token(identity)
    if body is None:
        body = await request.body()
    try:
        return await gw.upstreams.call(
            service,
            method or request.method,
            "/" + quote(matched.path, safe="/:"),
            query=request.scope.get("query_string", b"").decode("latin-1"),
            body=body,
            headers=headers,
        )
    except UpstreamUnavailable as unavailable:
        raise HTTPException(503, detail=unavailable.detail) from None


def relay(answer: Answer) -> Response:
    relayed = Response(content=answer.content, status_code=answer.status_code, media_type=answer.content_type)
    relayed.headers.update(_SECURITY_HEADERS)
    return relayed


def matched_route(request: Request, path: str) -> domain.Match:
    try:
        return domain.match(request.method, path, request.scope.get("raw_path") or b"")
    except domain.NoRoute as no_route:
        raise HTTPException(no_route.status, detail=no_route.detail) from None


@router.post(
    "/organisations",
    status_code=201,
    summary="Register an organisation (operator); its API key is shown once, with its Kafka topics",
)
async def register_organisation(request: Request, caller: Authenticated, gw: Service) -> Response:
    if not caller.identity.is_operator:
        raise HTTPException(403, detail="only an operator registers organisations")
    upstream = await forward(gw, request, matched_route(request, "organisations"), caller.identity)
    if upstream.status_code != 201:
        return relay(upstream)
    registered: dict[str, Any] = upstream.json()
    minted = domain.mint()
    async with gw.sessions() as session:
        KeyRepository(session).add(minted.key_id, registered["organisation_id"], minted.digest)
        await session.commit()
    return JSONResponse({**registered, "api_key": minted.key, "api_key_id": minted.key_id}, status_code=201)


@router.post(
    "/organisations/{organisation_id}/api-keys", status_code=201, summary="Mint another key (operator)"
)
async def mint_key(
    organisation_id: EntityId, request: Request, caller: Authenticated, gw: Service
) -> dict[str, str]:
    if not caller.identity.is_operator:
        raise HTTPException(403, detail="only an operator mints keys")
    # Only a registered organisation gets a key: ask members for it, as a GET of the organisation.
    organisation_route = domain.match("GET", f"organisations/{organisation_id}", b"")
    upstream = await forward(gw, request, organisation_route, caller.identity, b"", "GET")
    if upstream.status_code != 200:
        raise HTTPException(upstream.status_code, detail=upstream.json().get("detail"))
    minted = domain.mint()
    async with gw.sessions() as session:
        KeyRepository(session).add(minted.key_id, organisation_id, minted.digest)
        await session.commit()
    return {"organisation_id": organisation_id, "api_key": minted.key, "api_key_id": minted.key_id}


@router.delete("/api-keys/{key_id}", status_code=204, summary="Revoke a key (operator)")
async def revoke_key(key_id: EntityId, caller: Authenticated, gw: Service) -> Response:
    if not caller.identity.is_operator:
        raise HTTPException(403, detail="only an operator revokes keys")
    async with gw.sessions() as session:
        if not await KeyRepository(session).revoke(key_id):
            raise HTTPException(404, detail=f"unknown key {key_id}")
        await session.commit()
    gw.forget_key(key_id)  # this gateway at once; other replicas within their cache time
    return Response(status_code=204)


@router.get(
    "/students/{student_id}/export",
    summary="Everything every service holds about a student (the student's school, or an operator)",
)
async def export_student(
    student_id: EntityId, request: Request, caller: Authenticated, gw: Service
) -> Response:
    matched = matched_route(request, f"students/{student_id}/export")
    # Members decides who may: the student's school, or an operator; the others answer the gateway then.
    members = await forward(gw, request, matched, caller.identity)
    if members.status_code != 200:
        return relay(members)
    export: dict[str, Any] = {"student_id": student_id, "members": members.json()}
    for service in ("matching", "notifications"):
        route = domain.Route(matched.route.template, frozenset({"GET"}), service)
        part = await forward(
            gw, request, domain.Match(route, matched.path, matched.ids), service_identity("gateway")
        )
        if part.status_code != 200:
            raise HTTPException(503, detail=f"{service} could not export: {part.status_code}")
        export[service] = part.json()
    return JSONResponse(export)
