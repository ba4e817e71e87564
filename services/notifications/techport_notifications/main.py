"""Notifications' wiring. Run with `uvicorn --factory techport_notifications.main:create_app`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from faststream_fastapi import FastStreamAPI
from techport_shared.runtime import ServiceRuntime, build_runtime
from techport_shared.web import identity_dependency

from techport_notifications.api import router
from techport_notifications.handlers import TOPICS, dispatcher
from techport_notifications.service import Notifications
from techport_notifications.settings import NotificationsSettings
from techport_notifications.store import tables

MIGRATIONS = Path(__file__).parent / "migrations"


def build(
    settings: NotificationsSettings | None = None,
) -> tuple[FastStreamAPI, ServiceRuntime, Notifications]:
    settings = settings or NotificationsSettings()
    runtime = build_runtime(
        "notifications",
        settings.database_url,
        tables,
        MIGRATIONS,
        kafka=settings.kafka,
        consumer=settings.consumer,
        outbox=settings.outbox,
        migrate_on_start=settings.migrate_on_start,
    )
    service = Notifications(settings)
    runtime.consumer.subscribe(TOPICS, settings.consumer_group, dispatcher(service, runtime.uow))

    async def start_sender() -> None:
        runtime.background(service.run(runtime.uow), "notifications-sender", stop=service.stop)

    runtime.on_start.append(start_sender)
    app = FastAPI(
        title="Techport notifications",
        description="Match and partnership emails, digested, in Dutch or English, once.",
        version="1.0.0",
        lifespan=runtime.lifespan,
    )
    app.state.runtime = runtime
    app.state.notifications = service
    app.state.caller = identity_dependency(settings.identity_secret.get_secret_value)
    app.include_router(router)
    return runtime.application(app), runtime, service


def create_app() -> FastStreamAPI:
    return build()[0]
