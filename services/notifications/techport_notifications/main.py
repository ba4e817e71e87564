"""Notifications' wiring (its bootstrap): settings, the shared runtime, the handler table with its
dependencies, the consumer of members' and matching's topics, the sender, and the HTTP API.
Run with `uvicorn --factory techport_notifications.main:create_app`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from faststream_fastapi import FastStreamAPI
from techport_shared.messagebus import EventDispatcher, MessageBus, inject
from techport_shared.runtime import ServiceRuntime, build_runtime
from techport_shared.sealing import StudentKeys
from techport_shared.topics import MATCHES, ORGANISATIONS, PARTNERSHIPS, STUDENTS, VACANCIES

from techport_notifications.api import router
from techport_notifications.handlers import HANDLERS, preload
from techport_notifications.mailer import Unsubscribes
from techport_notifications.sender import Sender
from techport_notifications.settings import NotificationsSettings
from techport_notifications.store import NotificationsUnitOfWork, tables

MIGRATIONS = Path(__file__).parent / "migrations"
CONSUMER = "notifications"
TOPICS = (ORGANISATIONS.name, STUDENTS.name, VACANCIES.name, MATCHES.name, PARTNERSHIPS.name)


def build(settings: NotificationsSettings | None = None) -> tuple[FastStreamAPI, ServiceRuntime, Sender]:
    settings = settings or NotificationsSettings()
    runtime = build_runtime("notifications", settings, tables, MIGRATIONS, NotificationsUnitOfWork)
    keys = StudentKeys("notifications", settings.members_url, settings.identity_secret.get_secret_value())
    # One lock: the consumer and the sender's claim take turns, so no item joins a digest being claimed.
    bus = MessageBus(
        runtime.uow, inject(HANDLERS, keys=keys, digest_seconds=settings.digest_seconds), lock=asyncio.Lock()
    )
    runtime.consumer.subscribe(
        TOPICS,
        settings.consumer_group,
        EventDispatcher("notifications", CONSUMER, bus, keys=keys, preload=preload),
    )
    unsubscribes = Unsubscribes(settings.unsubscribe_secret.get_secret_value(), settings.public_url)
    sender = Sender(bus, settings, unsubscribes)

    async def start_sender() -> None:
        runtime.background(sender.run, "notifications-sender", stop=sender.stop)

    runtime.on_start.append(start_sender)
    app = runtime.http_app(
        "Techport notifications",
        "Match and partnership emails, digested, in Dutch or English, once.",
        router,
        bus=bus,
        unsubscribes=unsubscribes,
        public_url=settings.public_url,
    )
    return app, runtime, sender


def create_app() -> FastStreamAPI:
    return build()[0]
