"""Matching's wiring (its bootstrap): settings, the shared runtime, the index keeper, the handler table with
its dependencies, the consumer of members' topics (store, then decide, per batch), the sweep of what a
stopped replica left undecided, and the HTTP API.
Run with `uvicorn --factory techport_matching.main:create_app`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from faststream_fastapi import FastStreamAPI
from techport_shared.consumer import ConsumedRecord
from techport_shared.db import now
from techport_shared.envelope import Origin
from techport_shared.identity import service_identity
from techport_shared.logging import get_logger
from techport_shared.messagebus import Context, EventDispatcher, MessageBus, Outcome, inject
from techport_shared.runtime import ServiceRuntime, build_runtime
from techport_shared.sealing import StudentKeys
from techport_shared.topics import ORGANISATIONS, STUDENTS, VACANCIES

from techport_matching.api import router
from techport_matching.handlers import HANDLERS, Decide, preload
from techport_matching.keeper import IndexKeeper
from techport_matching.settings import MatchingSettings
from techport_matching.store import MatchingUnitOfWork, StudentRow, VacancyRow, tables

MIGRATIONS = Path(__file__).parent / "migrations"
CONSUMER = "matching"
TOPICS = (ORGANISATIONS.name, STUDENTS.name, VACANCIES.name)
log = get_logger(__name__)


class StoreThenDecide:
    """The consumer's record handler: a batch is stored (one transaction, each record deduplicated), then its
    students and vacancies are matched (a second transaction, after the first committed)."""

    def __init__(self, dispatcher: EventDispatcher, bus: MessageBus[Any]) -> None:
        self._dispatcher = dispatcher
        self._bus = bus
        self._context = Context(service_identity("matching"), Origin(None, None, now(), "event"))

    async def batch(self, records: list[ConsumedRecord]) -> Sequence[Outcome]:
        outcomes = await self._dispatcher.batch(records)
        await self.decide(records)
        return outcomes

    async def __call__(self, record: ConsumedRecord) -> str:
        outcome = await self._dispatcher(record)
        await self.decide([record])
        return outcome

    async def decide(self, records: list[ConsumedRecord]) -> None:
        named = {
            topic: tuple({r.key.decode("utf-8", "replace") for r in records if r.topic == topic and r.key})
            for topic in (STUDENTS.name, VACANCIES.name)
        }
        if named[STUDENTS.name] or named[VACANCIES.name]:
            await self._bus.handle(Decide(named[STUDENTS.name], named[VACANCIES.name]), self._context)


def build(settings: MatchingSettings | None = None) -> tuple[FastStreamAPI, ServiceRuntime, IndexKeeper]:
    settings = settings or MatchingSettings()
    runtime = build_runtime("matching", settings, tables, MIGRATIONS, MatchingUnitOfWork)
    keeper = IndexKeeper(settings.top_k_per_vacancy)
    keys = StudentKeys("matching", settings.members_url, settings.identity_secret.get_secret_value())
    # The index is one in-memory state: the consumer's work and a rebuild take turns.
    bus = MessageBus(
        runtime.uow,
        inject(HANDLERS, keeper=keeper, settings=settings, key=settings.reference_key()),
        lock=asyncio.Lock(),
    )
    dispatcher = EventDispatcher("matching", CONSUMER, bus, keys=keys, preload=preload)
    handler = StoreThenDecide(dispatcher, bus)
    runtime.consumer.subscribe(TOPICS, settings.consumer_group, handler)

    async def load_index() -> None:
        async with bus.lock, runtime.uow() as uow:
            await keeper.rebuild(uow.matching)

    async def sweep() -> None:
        """What a stopped replica stored but never matched is matched here, a while later."""
        while True:
            await asyncio.sleep(settings.pending_after_s / 2)
            before = now() - timedelta(seconds=settings.pending_after_s)
            async with runtime.uow() as uow:
                students = await uow.matching.stale_pending(StudentRow, before)
                vacancies = await uow.matching.stale_pending(VacancyRow, before)
            if students or vacancies:
                log.info("matching what was left undecided", students=len(students), vacancies=len(vacancies))
                await bus.handle(Decide(tuple(students), tuple(vacancies)), handler._context)

    async def start_sweep() -> None:
        runtime.background(sweep, "matching-pending-sweep")

    runtime.on_start.extend([load_index, start_sweep])
    app = runtime.http_app(
        "Techport matching",
        "Scored, explained matches between students and vacancies; partnerships.",
        router,
        bus=bus,
        keeper=keeper,
        reference_key=settings.reference_key(),
    )
    return app, runtime, keeper


def create_app() -> FastStreamAPI:
    return build()[0]
