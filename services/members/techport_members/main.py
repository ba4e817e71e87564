"""Members' wiring: settings, the shared runtime (database, broker, outbox relay, consumer), the ingress
consumer and the HTTP API. Run with `uvicorn --factory techport_members.main:create_app`."""

from __future__ import annotations

from pathlib import Path

from faststream_fastapi import FastStreamAPI
from techport_shared.runtime import ServiceRuntime, build_runtime
from techport_shared.topics import PARTNER_INGRESS

from techport_members.api import router
from techport_members.handlers import PartnerIngress
from techport_members.settings import MembersSettings
from techport_members.store import tables

MIGRATIONS = Path(__file__).parent / "migrations"


def build(settings: MembersSettings | None = None) -> tuple[FastStreamAPI, ServiceRuntime]:
    settings = settings or MembersSettings()
    runtime = build_runtime("members", settings, tables, MIGRATIONS)
    runtime.consumer.subscribe(PARTNER_INGRESS.name, settings.consumer_group, PartnerIngress(runtime.uow))
    app = runtime.http_app(
        "Techport members", "The registry of organisations, students and vacancies.", router
    )
    return app, runtime


def create_app() -> FastStreamAPI:
    return build()[0]
