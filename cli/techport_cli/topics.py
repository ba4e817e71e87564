"""Reaching the platform's Kafka from the command line: which cluster, and reading a topic to its end."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from techport_shared.settings import KafkaSettings


def kafka_settings(var: Path = Path("var")) -> KafkaSettings:
    """The environment's KAFKA_* settings; without KAFKA_BOOTSTRAP_SERVERS, the broker `techport run` wrote
    into var/run/endpoints.json."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return KafkaSettings()
    endpoints = var / "run" / "endpoints.json"
    if endpoints.exists():
        return KafkaSettings(kafka_bootstrap_servers=str(json.loads(endpoints.read_text())["kafka"]))
    raise SystemExit("no broker: set KAFKA_BOOTSTRAP_SERVERS or start the platform with `make run`")


async def read_topic(
    kafka: KafkaSettings, topic: str, wait_s: float = 0.0, group: str | None = None
) -> list[Any]:
    """Every record of `topic` up to its end when we started, then whatever arrives within `wait_s`.

    Without `group` it reads from the beginning and commits nothing; with one it reads from the group's
    committed offsets (and the caller decides what to commit, see `dead_letters`).
    """
    consumer = AIOKafkaConsumer(
        **kafka.client_options(), group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await _partitions(kafka, topic))]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[Any] = []
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(records)
            caught_up = all([await consumer.position(tp) >= ends[tp] for tp in partitions])
            if caught_up and asyncio.get_running_loop().time() >= deadline:
                return found
    finally:
        await consumer.stop()


async def _partitions(kafka: KafkaSettings, topic: str) -> set[int]:
    admin = AIOKafkaAdminClient(**kafka.client_options())
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described.get("error_code") or not described.get("partitions"):
        raise SystemExit(f"topic {topic} does not exist")
    return {p["partition"] for p in described["partitions"]}
