"""`techport dlq replay` over the real broker: a record dead-lettered by a broken handler, replayed with the
CLI once the handler is fixed, is handled exactly once; a dry run and a second replay publish nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from techport_shared.envelope import to_binary

from tests.kafka_helpers import fresh_topic, header, produce, read_topic
from tests.shared.kit import (
    effect_subjects,
    erased_event,
    open_database,
    record_effect,
    running_consumer,
    wait_for_effects,
)

REPO = Path(__file__).resolve().parents[2]


async def techport(bootstrap: str, *args: str) -> str:
    """The operator's command, as a separate process."""
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "COLUMNS": "200"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "techport_cli.main", *args,
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_a_dead_lettered_record_replayed_with_the_cli_is_handled_once(
    kafka_topics, tmp_path: Path
) -> None:
    topic = await fresh_topic(kafka_topics, "test.replay", partitions=2)
    bootstrap = kafka_topics.kafka_bootstrap_servers
    db = await open_database(f"sqlite:///{tmp_path / 'kit.db'}")
    broken = True

    async def until_fixed(data, uow, context) -> None:
        if broken and data.student_id == "victim":
            raise RuntimeError("bug #42: cannot handle victim")
        await record_effect(data, uow, context)

    victim = erased_event("victim")
    async with running_consumer(kafka_topics, topic, db, group="g-replay", handler=until_fixed):
        await produce(bootstrap, topic, to_binary(victim), to_binary(erased_event("bystander")))
        await wait_for_effects(db, ["bystander"])
        await read_topic(
            bootstrap, "techport.dlq.v1", until=lambda found: len(found) == 1,
            where=lambda r: header(r, "dlq_topic") == topic,
        )  # fmt: skip

        listed = await techport(bootstrap, "dlq", "list")
        assert topic in listed and "bug #42" in listed

        dry = await techport(bootstrap, "dlq", "replay", "--service", "kit", "--topic", topic, "--dry-run")
        assert f"would replay 1 to {topic}" in dry
        await asyncio.sleep(1.0)
        assert await effect_subjects(db) == ["bystander"]  # a dry run publishes nothing

        broken = False  # the fix is deployed
        replayed = await techport(bootstrap, "dlq", "replay", "--service", "kit", "--topic", topic)
        assert f"replayed 1 to {topic}" in replayed
        await wait_for_effects(db, ["bystander", "victim"])

        again = await techport(bootstrap, "dlq", "replay", "--service", "kit", "--topic", topic)
        assert f"replayed 0 to {topic}" in again
        await asyncio.sleep(1.0)
        assert sorted(await effect_subjects(db)) == ["bystander", "victim"]

    # The copy on the topic is the original record, traced back to its dead letter.
    copies = await read_topic(
        bootstrap, topic, until=lambda found: len(found) == 1, where=lambda r: header(r, "dlq_replayed_from")
    )
    assert copies[0].value == to_binary(victim).value
    assert header(copies[0], "ce_id") == victim.id
    assert not any(key.startswith("dlq_") and key != "dlq_replayed_from" for key, _ in copies[0].headers)
    await db.close()
