"""The one HTTP entrance: `/api/v1/...` with API keys, per-key rate limits, the caller's identity passed on as
a signed short-lived token, and routing to members, matching and notifications over pooled clients."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from techport_shared.db import SessionFactory
from techport_shared.identity import IDENTITY_HEADER, OPERATOR, Identity, issue_token, organisation
from techport_shared.logging import get_logger
from techport_shared.web import REQUEST_ID_HEADER, EntityId, request_id

from techport_gateway import domain
from techport_gateway.settings import GatewaySettings
from techport_gateway.store import KeyRepository

log = get_logger(__name__)
_FORWARDED_HEADERS = ("content-type", "accept", "accept-language")


@dataclass
class Caller:
    identity: Identity
    key_id: str  # "operator" or the organisation key's id: what rate limits count


@dataclass
class Gateway:
    settings: GatewaySettings
    sessions: SessionFactory
    clients: dict[str, httpx.AsyncClient]
    limiter: MovingWindowRateLimiter
    rate_limits: list[RateLimitItem]

    @classmethod
    def create(cls, settings: GatewaySettings, sessions: SessionFactory) -> Gateway:
        timeout = httpx.Timeout(settings.upstream_timeout_s, connect=2.0)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        urls = {
            "members": settings.members_url,
            "matching": settings.matching_url,
            "notifications": settings.notifications_url,
        }
        clients = {
            name: httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits)
            for name, url in urls.items()
        }
        limiter = MovingWindowRateLimiter(MemoryStorage())
        return cls(settings, sessions, clients, limiter, parse_many(settings.rate_limit))

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()


def gateway(request: Request) -> Gateway:
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
        row = None
        if parsed is not None:
            async with gw.sessions() as session:
                row = await KeyRepository(session).get(parsed[0])
        if (
            parsed is None
            or row is None
            or row.revoked_at is not None
            or not domain.same(domain.digest(parsed[1]), row.key_hash)
        ):
            raise HTTPException(
                401, detail="unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        caller = Caller(organisation(row.organisation_id), row.key_id)
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


async def _forward(
    gw: Gateway,
    request: Request,
    path: str,
    identity: Identity | None,
    body: bytes | None = None,
    method: str | None = None,
) -> httpx.Response:
    service = domain.upstream(path)
    if service is None:
        raise HTTPException(404, detail=f"no such path: /api/v1/{path}")
    headers = {name: value for name in _FORWARDED_HEADERS if (value := request.headers.get(name))}
    headers[REQUEST_ID_HEADER] = request_id(request)
    if identity is not None:
        headers[IDENTITY_HEADER] = issue_token(
            identity, gw.settings.identity_secret.get_secret_value(), gw.settings.identity_ttl_s
        )
    if body is None:
        body = await request.body()
    if len(body) > gw.settings.max_body_bytes:
        raise HTTPException(413, detail=f"the body is larger than {gw.settings.max_body_bytes} bytes")
    try:
        return await gw.clients[service].request(
            method or request.method,
            "/" + quote(path, safe="/"),
            params=request.query_params,
            content=body,
            headers=headers,
        )
    except httpx.TimeoutException:
        raise HTTPException(503, detail=f"{service} did not answer in time") from None
    except httpx.TransportError as exc:
        log.warning("upstream unreachable", service=service, error=repr(exc))
        raise HTTPException(503, detail=f"{service} is unavailable") from None


def _relay(response: httpx.Response) -> Response:
    return Response(
        content=response.content,
        status_code=response.status_code,
        media_type=response.headers.get("content-type"),
    )


@router.post(
    "/organisations",
    status_code=201,
    summary="Register an organisation (operator); its API key is shown once",
)
async def register_organisation(request: Request, caller: Authenticated, gw: Service) -> Response:
    if not caller.identity.is_operator:
        raise HTTPException(403, detail="only an operator registers organisations")
    upstream = await _forward(gw, request, "organisations", caller.identity)
    if upstream.status_code != 201:
        return _relay(upstream)
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
    organisation_id: str, request: Request, caller: Authenticated, gw: Service
) -> dict[str, str]:
    if not caller.identity.is_operator:
        raise HTTPException(403, detail="only an operator mints keys")
    upstream = await _forward(gw, request, f"organisations/{organisation_id}", caller.identity, b"", "GET")
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
    return Response(status_code=204)


@router.get("/unsubscribe", summary="Stop email for a recipient (the signed token is the credential)")
async def unsubscribe(request: Request, gw: Service) -> Response:
    return _relay(await _forward(gw, request, "unsubscribe", None))


@router.api_route("/{path:path}", methods=["GET", "POST", "PATCH", "DELETE"], include_in_schema=False)
async def proxy(path: str, request: Request, caller: Authenticated, gw: Service) -> Response:
    return _relay(await _forward(gw, request, path, caller.identity))
