"""Members' wiring (its bootstrap): settings, the shared runtime (database, broker, outbox relay, consumer),
the handler table with its dependencies, the partner ingress consumers and the HTTP API.
Run with `uvicorn --factory techport_members.main:create_app`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiokafka import TopicPartition
from faststream_fastapi import FastStreamAPI
from techport_shared.consumer import ConsumedRecord
from techport_shared.envelope import EnvelopeError, from_record
from techport_shared.events import STUDENT_TYPES
from techport_shared.kafka import delete_handled, ensure_partner_topics
from techport_shared.limits import MAX_BATCH_BYTES
from techport_shared.logging import get_logger
from techport_shared.messagebus import EventDispatcher, MessageBus, inject
from techport_shared.runtime import ServiceRuntime, build_runtime
from techport_shared.sealing import seal_bytes
from techport_shared.topics import PARTNER_INGRESS_PATTERN, RETIRED_INGRESS, partner_topic_kind

from techport_members.api import router
from techport_members.handlers import (
    CONSUMER,
    HANDLERS,
    RetiredIngress,
    check_source,
    ingress_consumer,
    partner_actor,
    preload,
    reject,
)
from techport_members.settings import MembersSettings
from techport_members.store import MembersUnitOfWork, tables

MIGRATIONS = Path(__file__).parent / "migrations"
log = get_logger(__name__)


def build(settings: MembersSettings | None = None) -> tuple[FastStreamAPI, ServiceRuntime]:
    settings = settings or MembersSettings()
    runtime = build_runtime("members", settings, tables, MIGRATIONS, MembersUnitOfWork)

    async def provision(organisation_id: str) -> None:
        if await ensure_partner_topics(settings.kafka, organisation_id):
            runtime.consumer.refresh_metadata()  # read the new topic now, not at the next metadata refresh

    bus = MessageBus(runtime.uow, inject(HANDLERS, provision=provision))
    ingress = EventDispatcher(
        "members",
        CONSUMER,
        bus,
        identify=partner_actor,
        checks=check_source,
        reject=reject,
        consumer_of=ingress_consumer,
        preload=preload,
    )
    # Every partner's own topic, by pattern: a newly registered partner's topic is read within
    # KAFKA_METADATA_MAX_AGE_MS, from its first record.
    runtime.consumer.subscribe((), settings.consumer_group, ingress, pattern=PARTNER_INGRESS_PATTERN)
    runtime.consumer.subscribe(RETIRED_INGRESS.name, f"{settings.consumer_group}-retired", RetiredIngress())
    runtime.dead_letters.seal_with(lambda record: seal_dead_letter(runtime, record))
    handled = HandledRecords(settings)
    runtime.consumer.on_committed.append(handled.note)

    async def provision_all() -> None:
        # Organisations registered before their topics existed (version 1, or a failed creation) get them.
        async with runtime.uow() as uow:
            organisations = await uow.members.organisation_ids()
        for organisation_id in organisations:
            await provision(organisation_id)

    runtime.on_start.append(provision_all)

    async def start_deleting() -> None:
        runtime.background(handled.run, "members-delete-handled", stop=handled.stop)

    runtime.on_start.append(start_deleting)
    app = runtime.http_app(
        "Techport members",
        "The registry of organisations, students and vacancies, and the partners' HTTP ingress.",
        router,
        larger_bodies={"/events": MAX_BATCH_BYTES},
        bus=bus,
        ingress=ingress,
    )
    return app, runtime


async def seal_dead_letter(runtime: ServiceRuntime, record: ConsumedRecord) -> bytes | None:
    """A partner's record about a student, dead-lettered, is kept sealed under the student's key: the
    student's erasure then reaches the dead letter too."""
    if partner_topic_kind(record.topic) != "ingress" or not record.value:
        return None
    try:
        envelope = from_record(record.key, record.value, record.headers)
    except EnvelopeError:
        return None
    student_id = envelope.data.get("student_id") if envelope.type.startswith(STUDENT_TYPES) else None
    if not isinstance(student_id, str) or not student_id:
        return None
    async with runtime.uow() as uow:
        _kid, key = await uow.members.student_key(student_id[:64])
        await uow.commit()
    return seal_bytes(record.value, key, student_id[:64])


class HandledRecords:
    """Deletes partner records once handled and committed (Kafka's DeleteRecords), a few seconds later and in
    bulk: what partners write is transport, not storage."""

    def __init__(self, settings: MembersSettings) -> None:
        self._settings = settings
        self._pending: dict[TopicPartition, int] = {}
        self._wake = asyncio.Event()
        self._stopping = False

    def note(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if partner_topic_kind(tp.topic) == "ingress":
                self._pending[tp] = max(offset, self._pending.get(tp, 0))
                self._wake.set()

    async def run(self) -> None:
        self._stopping = False
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._settings.delete_handled_after_s)
            pending, self._pending = self._pending, {}
            try:
                await delete_handled(self._settings.kafka, pending)
            except Exception as exc:  # the broker may be away: try again with the next batch
                log.warning("deleting handled partner records failed", error=repr(exc))
                for tp, offset in pending.items():
                    self._pending[tp] = max(offset, self._pending.get(tp, 0))

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()


def create_app() -> FastStreamAPI:
    return build()[0]
