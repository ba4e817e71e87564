"""HTTP pieces every service shares: request ids, request metrics, health and readiness, the caller's
identity, bounded JSON bodies (size and depth checked before parsing), and the one place a domain refusal
becomes an HTTP status (`http_error`): 422 with field-level details in FastAPI's shape, 403, 404, 409."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as FastAPIPath
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from techport_shared.envelope import Origin
from techport_shared.errors import ErrorKind, Refused
from techport_shared.identity import IDENTITY_HEADER, Identity, InvalidIdentity, verify_token
from techport_shared.limits import MAX_EVENT_BYTES, InputTooLarge, check_json
from techport_shared.logging import log_context
from techport_shared.messagebus import Context, MessageBus
from techport_shared.uow import UnitOfWork

REQUEST_ID_HEADER = "X-Request-ID"
HTTP_REQUESTS = Counter(
    "techport_http_requests_total", "HTTP requests served.", ["service", "method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "techport_http_request_seconds", "HTTP request latency.", ["service", "method", "route"]
)

ReadinessCheck = Callable[[], Awaitable[Any]]


class RequestContextMiddleware:
    """Accepts or creates X-Request-ID, logs with it, returns it, and counts the request. Plain ASGI
    (Starlette's BaseHTTPMiddleware costs a task and a stream per request, on every request of every
    service)."""

    def __init__(self, app: Any, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = REQUEST_ID_HEADER.lower().encode()
        given = next((v for k, v in scope.get("headers", ()) if k == header), None)
        request_id = given.decode("latin-1")[:200] if given else str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message["headers"] = [*message.get("headers", ()), (header, request_id.encode("latin-1"))]
            await send(message)

        with log_context(correlation_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", "unmatched")
                method = scope.get("method", "")
                HTTP_REQUESTS.labels(self.service, method, template, str(status["code"])).inc()
                HTTP_SECONDS.labels(self.service, method, template).observe(time.perf_counter() - started)


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", None) or uuid.uuid4())


# Dependencies are `async def`: FastAPI runs a plain `def` one in a thread pool, a thread hop per request.
async def request_id(request: Request) -> str:
    return request_id_of(request)


RequestId = Annotated[str, Depends(request_id)]


def health_router(checks: Mapping[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Ready: every dependency reachable")
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), timeout=3)
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"unavailable: {type(exc).__name__}"
        ready = all(value == "ok" for value in results.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": results}, 200 if ready else 503
        )

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def identity_dependency(secret: Callable[[], str]) -> Callable[[Request], Identity]:
    """A FastAPI dependency: the verified identity of the caller, or 401."""

    def caller(request: Request) -> Identity:
        token = request.headers.get(IDENTITY_HEADER)
        if not token:
            raise HTTPException(401, detail="missing caller identity (requests come through the gateway)")
        try:
            return verify_token(token, secret())
        except InvalidIdentity:
            raise HTTPException(401, detail="invalid or expired caller identity") from None

    return caller


ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
# Ids in paths and queries are the contract's ids (at most 64 of [A-Za-z0-9._:-]); anything else is a 422
# here rather than a query with bytes a database may refuse.
EntityId = Annotated[str, FastAPIPath(pattern=ID_PATTERN, min_length=1, max_length=64)]
RecipientId = Annotated[str, Query(pattern=ID_PATTERN, min_length=1, max_length=80)]
OrganisationIdQuery = Annotated[str | None, Query(pattern=ID_PATTERN, min_length=1, max_length=64)]


async def caller(request: Request) -> Identity:
    """The verified caller (401 without a valid identity token)."""
    identity: Identity = request.app.state.caller(request)
    return identity


async def unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    async with request.app.state.runtime.uow() as uow:
        yield uow


Caller = Annotated[Identity, Depends(caller)]
UoW = Annotated[UnitOfWork, Depends(unit_of_work)]


async def request_context(actor: Caller, request: Request) -> Context:
    """Who asks, and the request as the origin of what it changes (its id is the correlation id)."""
    return Context(actor, Origin.of_request(request_id_of(request)))


async def message_bus(request: Request) -> MessageBus[Any]:
    bus: MessageBus[Any] = request.app.state.bus
    return bus


RequestContext = Annotated[Context, Depends(request_context)]
Bus = Annotated[MessageBus[Any], Depends(message_bus)]
STATUS: dict[ErrorKind, int] = {"forbidden": 403, "not_found": 404, "conflict": 409, "invalid": 422}


def http_error(refused: Refused) -> HTTPException:
    """A domain refusal as HTTP: 422 lists every invalid field; 403, 404 and 409 say what stood in the way."""
    kind = refused.kind
    problems = [p.as_dict() for p in refused.problems if p.kind == kind]
    if kind == "invalid":
        return field_errors_422(problems)
    return HTTPException(STATUS[kind], detail="; ".join(f"{p['field']}: {p['message']}" for p in problems))


def field_errors_422(errors: list[dict[str, str]], location: str = "body") -> HTTPException:
    """Domain validation errors in the shape FastAPI gives schema errors, so clients handle one shape."""
    detail = [
        {"type": "value_error", "loc": [location, *error["field"].split(".")], "msg": error["message"]}
        for error in errors
    ]
    return HTTPException(422, detail=detail)


class BoundedBodyMiddleware:
    """Refuses a body over `max_bytes` (413) and JSON nested deeper than the contract allows (422), before
    anything parses it: FastAPI's JSON parser would recurse through a 50,000-deep document."""

    def __init__(
        self, app: Any, max_bytes: int = MAX_EVENT_BYTES, larger: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Paths that take more (a batch of partner events).
        self.larger = dict(larger or {})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope.get("path", ""), self.max_bytes)
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > limit:
                await _answer(send, 413, f"the body is larger than {limit} bytes")
                return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if "json" in headers.get("content-type", ""):
            try:
                check_json(bytes(body), "body", limit)
            except InputTooLarge as exc:
                await _answer(send, 422, [{"type": "value_error", "loc": [exc.field], "msg": exc.message}])
                return
        delivered = False

        async def replay() -> Any:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


async def _answer(send: Any, status: int, detail: Any) -> None:
    import json

    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def install(
    app: FastAPI,
    service: str,
    checks: Mapping[str, ReadinessCheck],
    larger_bodies: Mapping[str, int] | None = None,
) -> None:
    app.add_middleware(BoundedBodyMiddleware, larger=larger_bodies)
    app.add_middleware(RequestContextMiddleware, service=service)
    app.include_router(health_router(checks))
