"""The gateway's hot path: a request for a contract route that a service answers is checked (key, scope,
rate limit) and forwarded here, as plain ASGI, without FastAPI's routing and dependency machinery. The same
functions decide as in the FastAPI app (`api.authenticate`, `api.forward`); only the framework around them
is left out, which measured at about half of the gateway's CPU per forwarded request.

The gateway's own routes (registering an organisation, keys, the export), its documents, health and metrics
go on to the FastAPI app.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.requests import Request
from techport_shared.limits import MAX_BATCH_BYTES
from techport_shared.web import BoundedBodyMiddleware, RequestContextMiddleware

from techport_gateway import domain
from techport_gateway.api import Gateway, authenticate, forward, matched_route, relay

PREFIX = "/api/v1/"


class _RouteLabel:
    """What the request metrics read from `scope["route"]`: the route's template, never the raw path."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class Forwarder:
    def __init__(self, app: Any, gw: Gateway) -> None:
        self.app = app
        self.gw = gw
        bounded = BoundedBodyMiddleware(self._handle, larger={"/api/v1/events": MAX_BATCH_BYTES})
        self._fast = RequestContextMiddleware(bounded, "gateway")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX) and not self._own(scope):
            await self._fast(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    @staticmethod
    def _own(scope: Any) -> bool:
        """A route the gateway answers itself, asked for at its canonical path (FastAPI matches that)."""
        path = scope["path"][len(PREFIX) :]
        try:
            matched = domain.match(scope["method"], path, scope.get("raw_path") or b"")
        except domain.NoRoute:
            return False  # answered here: 404 or 405
        return matched.route.own and matched.path == path

    async def _handle(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        try:
            matched = matched_route(request, scope["path"][len(PREFIX) :])
            if matched.route.own:  # an own route at another spelling of its path: not a route
                raise HTTPException(404, detail="no such path")
            scope["route"] = _RouteLabel(PREFIX + "/".join(matched.route.template))
            caller = None if matched.route.public else await authenticate(request, self.gw)
            identity = caller.identity if caller else None
            response: Any = relay(await forward(self.gw, request, matched, identity))
        except HTTPException as refused:
            response = JSONResponse(
                {"detail": refused.detail}, status_code=refused.status_code, headers=refused.headers
            )
        await response(scope, receive, send)
