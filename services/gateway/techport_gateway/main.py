"""The gateway's wiring. Run with `uvicorn --factory techport_gateway.main:create_app`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from techport_shared import web
from techport_shared.db import create_engine, session_factory
from techport_shared.limits import MAX_BATCH_BYTES
from techport_shared.logging import configure_logging
from techport_shared.migrations import upgrade

from techport_gateway import asyncapi, docs
from techport_gateway.api import Gateway, router
from techport_gateway.forwarding import Forwarder
from techport_gateway.settings import GatewaySettings

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: GatewaySettings | None = None) -> Forwarder:
    settings = settings or GatewaySettings()
    configure_logging("gateway")
    engine = create_engine(settings.database_url)
    gw = Gateway.create(settings, session_factory(engine))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await upgrade(MIGRATIONS, settings.database_url)
        await gw.upstreams.open()
        try:
            yield
        finally:
            await gw.close()
            await engine.dispose()

    app = FastAPI(
        title="Techport gateway",
        version="1.0.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.gateway = gw
    app.include_router(router)

    def reachable(name: str) -> Any:
        async def check() -> None:
            answer = await gw.upstreams.call(name, "GET", "/healthz", timeout_s=2)
            if answer.status_code != 200:
                raise ConnectionError(f"{name} answers {answer.status_code}")

        return check

    web.install(
        app,
        "gateway",
        {name: reachable(name) for name in gw.upstreams},
        larger_bodies={"/api/v1/events": MAX_BATCH_BYTES},
    )

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        own = app.openapi()
        return JSONResponse(await docs.compose(own, gw.upstreams))

    @app.get("/docs", include_in_schema=False)
    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Techport API")

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi_document() -> JSONResponse:
        return JSONResponse(asyncapi.document())

    return Forwarder(app, gw)
