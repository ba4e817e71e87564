"""Members' wiring: settings, the shared runtime (database, broker, outbox relay, consumer), the ingress
consumer and the HTTP API. Run with `uvicorn --factory techport_members.main:create_app`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from faststream_fastapi import FastStreamAPI
from techport_shared.runtime import ServiceRuntime, build_runtime
from techport_shared.topics import PARTNER_INGRESS
from techport_shared.web import identity_dependency

from techport_members.api import router
from techport_members.handlers import PartnerIngress
from techport_members.settings import MembersSettings
from techport_members.store import tables

MIGRATIONS = Path(__file__).parent / "migrations"


def build(settings: MembersSettings | None = None) -> tuple[FastStreamAPI, ServiceRuntime]:
    settings = settings or MembersSettings()
    runtime = build_runtime(
        "members",
        settings.database_url,
        tables,
        MIGRATIONS,
        kafka=settings.kafka,
        consumer=settings.consumer,
        outbox=settings.outbox,
        migrate_on_start=settings.migrate_on_start,
    )
    runtime.consumer.subscribe(PARTNER_INGRESS.name, settings.ingress_group, PartnerIngress(runtime.uow))
    app = FastAPI(
        title="Techport members",
        description="The registry of organisations, students and vacancies.",
        version="1.0.0",
        lifespan=runtime.lifespan,
    )
    app.state.runtime = runtime
    app.state.caller = identity_dependency(settings.identity_secret.get_secret_value)
    app.include_router(router)
    return runtime.application(app), runtime


def create_app() -> FastStreamAPI:
    return build()[0]
