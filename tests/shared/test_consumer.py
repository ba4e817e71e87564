"""Retries, dead-lettering, dedupe and per-offset commits, over the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY
from techport_shared import kafka  # noqa: F401  (its import makes a fetcher's stop end; see the last test)
from techport_shared.envelope import Envelope, KafkaRecord, to_binary
from techport_shared.topics import DLQ

from tests.kafka_helpers import fresh_topic, header, produce, read_topic
from tests.shared.kit import (
    ERASED,
    effect_subjects,
    erased_event,
    open_database,
    record_effect,
    running_consumer,
    wait_for_effects,
)
from tests.waiting import eventually


async def test_a_redelivered_event_has_effect_once(kafka_topics, tmp_path: Path) -> None:
    topic = await fresh_topic(kafka_topics, "test.dedupe")
    db = await open_database(f"sqlite:///{tmp_path / 'kit.db'}")
    first, second = erased_event("s1"), erased_event("s2")
    bootstrap = kafka_topics.kafka_bootstrap_servers
    async with running_consumer(kafka_topics, topic, db, group="g1"):
        await produce(
            bootstrap, topic, to_binary(first), to_binary(first), to_binary(second), to_binary(first)
        )
        await wait_for_effects(db, ["s1", "s2"])
    # A new consumer group reads the topic again from the beginning: nothing has effect twice.
    async with running_consumer(kafka_topics, topic, db, group="g2"):
        await produce(bootstrap, topic, to_binary(erased_event("s3")))
        await wait_for_effects(db, ["s1", "s2", "s3"])
    assert sorted(await effect_subjects(db)) == ["s1", "s2", "s3"]
    assert await db.count(db.tables.processed) == 3
    await db.close()


async def test_a_handler_that_keeps_failing_lands_its_record_in_the_dlq_and_the_consumer_moves_on(
    kafka_topics, tmp_path: Path
) -> None:
    topic = await fresh_topic(kafka_topics, "test.dlq", partitions=1)
    db = await open_database(f"sqlite:///{tmp_path / 'kit.db'}")
    bootstrap = kafka_topics.kafka_bootstrap_servers
    failing = erased_event(f"fail-{uuid.uuid4().hex[:6]}")
    async with running_consumer(kafka_topics, topic, db, group="g"):
        await produce(bootstrap, topic, to_binary(failing), to_binary(erased_event("after")))
        await wait_for_effects(db, ["after"])
    dead = await read_topic(
        bootstrap,
        DLQ.name,
        until=lambda found: len(found) >= 1,
        where=lambda r: header(r, "dlq_topic") == topic,
    )
    assert len(dead) == 1
    record = dead[0]
    assert record.key == failing.subject.encode()
    assert record.value == to_binary(failing).value  # the original record, unchanged
    assert header(record, "ce_id") == failing.id
    assert header(record, "dlq_partition") == "0"
    assert header(record, "dlq_offset") == "0"
    assert header(record, "dlq_service") == "kit"
    assert header(record, "dlq_attempts") == "3"
    assert "ValueError: cannot handle fail-" in (header(record, "dlq_error") or "")
    # Both offsets are committed: a restart does not see them again.
    assert await _committed(bootstrap, "g", topic) == 2
    await db.close()


async def test_consumer_lag_counts_what_the_group_has_not_committed(kafka_topics, tmp_path: Path) -> None:
    topic = await fresh_topic(kafka_topics, "test.lag", partitions=1)
    db = await open_database(f"sqlite:///{tmp_path / 'kit.db'}")
    release = asyncio.Event()

    async def held_until_released(data, uow, context) -> None:
        if data.student_id == "held":
            await release.wait()
        await record_effect(data, uow, context)

    def lag() -> float | None:
        return REGISTRY.get_sample_value(
            "techport_consumer_lag", {"service": "kit", "group": "g-lag", "topic": topic, "partition": "0"}
        )

    bootstrap = kafka_topics.kafka_bootstrap_servers
    async with running_consumer(kafka_topics, topic, db, "g-lag", handler=held_until_released) as consumer:
        await produce(bootstrap, topic, *(to_binary(erased_event(s)) for s in ("held", "a", "b")))

        async def lag_is(expected: int) -> bool:
            await consumer.record_lag()
            return lag() == expected

        # The first record is held, so nothing is committed: all three are lag.
        await eventually(lambda: lag_is(3))
        release.set()
        await wait_for_effects(db, ["held", "a", "b"])
        await eventually(lambda: lag_is(0))
    await db.close()


async def test_bad_events_never_stop_a_consumer(kafka_topics, tmp_path: Path) -> None:
    topic = await fresh_topic(kafka_topics, "test.poison", partitions=1)
    db = await open_database(f"sqlite:///{tmp_path / 'kit.db'}")
    bootstrap = kafka_topics.kafka_bootstrap_servers
    good = to_binary(erased_event("good"))
    not_json = KafkaRecord(b"k1", b"{not json", dict(good.headers) | {"ce_id": b"p1"})
    unknown_type = to_binary(
        Envelope(type="nl.techport.spaceship.launched.v1", source="/t", data={}, subject="k2")
    )
    missing_field = to_binary(Envelope(type=ERASED, source="/t", data={"nothing": 1}, subject="k3"))
    not_an_event = KafkaRecord(b"k4", b'{"hello": "world"}', {"content-type": b"application/json"})
    huge = KafkaRecord(
        b"k5", b'{"student_id": "' + b"x" * 500_000 + b'"}', dict(good.headers) | {"ce_id": b"p5"}
    )
    async with running_consumer(kafka_topics, topic, db, group="g"):
        await produce(bootstrap, topic, not_json, unknown_type, missing_field, not_an_event, huge, good)
        await wait_for_effects(db, ["good"])
    dead = await read_topic(
        bootstrap,
        DLQ.name,
        until=lambda found: len(found) >= 4,
        where=lambda r: header(r, "dlq_topic") == topic,
    )
    errors = {r.key: header(r, "dlq_error") or "" for r in dead}
    assert set(errors) == {b"k1", b"k3", b"k4", b"k5"}  # the unknown type is ignored (and counted), not dead
    assert "not valid JSON" in errors[b"k1"]
    assert "student_id" in errors[b"k3"] and "Field required" in errors[b"k3"]
    assert "content-type" in errors[b"k4"]
    assert "at most 262144" in errors[b"k5"]  # over the contract's bound: refused before it is parsed
    assert await _committed(bootstrap, "g", topic) == 6
    # The poison went through the batches with the good record, not one at a time: the batch sizes count all
    # six (more only if a rebalance handed a batch over again).
    labels = {"service": "kit", "topic": topic}
    batched = REGISTRY.get_sample_value("techport_consumer_batch_records_sum", labels)
    assert batched is not None and batched >= 6
    await db.close()


async def _committed(bootstrap: str, group: str, topic: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()


async def _ends_as_in_796() -> None:
    raise KafkaError("Unexpected error during data retrieval")


async def test_a_consumer_whose_fetcher_and_coordinator_died_is_revived_and_goes_on(
    kafka_topics, tmp_path: Path
) -> None:
    """aiokafka's fetch and coordination tasks can end on a subscription change (aio-libs/aiokafka#796); the
    consumer then fetches nothing, silently. The runtime's watch starts them again; the next record is
    handled."""
    topic = await fresh_topic(kafka_topics, "test.fetcher", partitions=1)
    db = await open_database(f"sqlite:///{tmp_path / 'kit.db'}")
    bootstrap = kafka_topics.kafka_bootstrap_servers
    async with running_consumer(kafka_topics, topic, db, group="g-fetcher") as consumer:
        await produce(bootstrap, topic, to_binary(erased_event("before")))
        await wait_for_effects(db, ["before"])
        assert consumer.revive_fetchers() == 0  # nothing to do while it fetches
        kafka_consumer = consumer._subscribers[0][1].consumer
        # Both end as #796 ends them: the failed assertion, wrapped by aiokafka in a KafkaError (which the
        # consume loop's next poll meets, logs, and waits out). Swapped in before the loop can look.
        ended, failed = [], []
        for owner, name in (
            (kafka_consumer._fetcher, "_fetch_task"),
            (kafka_consumer._coordinator, "_coordination_task"),
        ):
            ended.append(getattr(owner, name))
            failed.append(asyncio.create_task(_ends_as_in_796()))
            setattr(owner, name, failed[-1])
            ended[-1].cancel()
        await asyncio.gather(*ended, *failed, return_exceptions=True)
        assert consumer.revive_fetchers() == 2
        await produce(bootstrap, topic, to_binary(erased_event("after")))
        await wait_for_effects(db, ["before", "after"])
    await db.close()


async def test_a_fetch_routine_that_swallows_its_stop_is_stopped_all_the_same() -> None:
    """As aiokafka's fetch routine does when its assignment goes at the moment it is stopped: the stop's
    cancellation is swallowed where it awaits its own cancelled fetch, then it waits for an assignment."""
    swallowed = asyncio.Event()

    async def routine() -> None:
        fetch = asyncio.create_task(asyncio.sleep(3600))
        with contextlib.suppress(asyncio.CancelledError):
            await fetch  # the stop's cancellation lands here and is suppressed with the fetch's
        swallowed.set()
        await asyncio.Event().wait()  # an assignment that never comes

    fetcher = Fetcher.__new__(Fetcher)
    fetcher._fetch_task = asyncio.create_task(routine())
    fetcher._fetch_waiters, fetcher._pending_tasks, fetcher._closed = set(), set(), False
    await asyncio.sleep(0)
    closing = asyncio.create_task(fetcher.close())
    await asyncio.wait({closing}, timeout=10)  # a guard against a hang, not a timing
    stopped = closing.done() and fetcher._fetch_task.done()
    for task in (closing, fetcher._fetch_task):  # what a hanging stop leaves behind
        task.cancel()
    assert swallowed.is_set() and stopped
