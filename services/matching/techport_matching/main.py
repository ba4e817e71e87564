"""Matching's wiring. Run with `uvicorn --factory techport_matching.main:create_app`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from faststream_fastapi import FastStreamAPI
from techport_shared.runtime import ServiceRuntime, build_runtime

from techport_matching.api import router
from techport_matching.handlers import TOPICS, dispatcher
from techport_matching.service import Matching
from techport_matching.settings import MatchingSettings
from techport_matching.store import tables

MIGRATIONS = Path(__file__).parent / "migrations"


def build(settings: MatchingSettings | None = None) -> tuple[FastStreamAPI, ServiceRuntime, Matching]:
    settings = settings or MatchingSettings()
    runtime = build_runtime("matching", settings, tables, MIGRATIONS)
    matching = Matching(settings)
    lock = asyncio.Lock()
    handle = dispatcher(matching, runtime.uow, lock)
    # One consumer for the three topics: they share the index, so they take turns anyway.
    runtime.consumer.subscribe(TOPICS, settings.consumer_group, handle)

    async def load_index() -> None:
        async with lock:
            await matching.rebuild_index(runtime.sessions)

    runtime.on_start.append(load_index)
    app = runtime.http_app(
        "Techport matching",
        "Scored, explained matches between students and vacancies; partnerships.",
        router,
        matching=matching,
        index_lock=lock,
    )
    return app, runtime, matching


def create_app() -> FastStreamAPI:
    return build()[0]
