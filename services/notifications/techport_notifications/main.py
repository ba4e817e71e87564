"""Notifications' wiring. Run with `uvicorn --factory techport_notifications.main:create_app`."""

from __future__ import annotations

from pathlib import Path

from faststream_fastapi import FastStreamAPI
from techport_shared.runtime import ServiceRuntime, build_runtime

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
    runtime = build_runtime("notifications", settings, tables, MIGRATIONS)
    service = Notifications(settings)
    runtime.consumer.subscribe(TOPICS, settings.consumer_group, dispatcher(service, runtime.uow))

    async def start_sender() -> None:
        runtime.background(lambda: service.run(runtime.uow), "notifications-sender", stop=service.stop)

    runtime.on_start.append(start_sender)
    app = runtime.http_app(
        "Techport notifications",
        "Match and partnership emails, digested, in Dutch or English, once.",
        router,
        notifications=service,
    )
    return app, runtime, service


def create_app() -> FastStreamAPI:
    return build()[0]
