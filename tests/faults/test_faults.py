"""Faults under steady load, each its own test, each ending in exact reconciliation (reconcile.py): the
platform as separate processes over a real Kafka, real databases and a real SMTP server.

Faults that need nothing special share one platform (one broker, SQLite): every run sends a dataset of its
own (its ids carry a tag) and the reconciler counts only that dataset. The faults that need a platform of
their own (PostgreSQL, a cluster of three) are in test_faults_own_platform.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from techport_shared.envelope import KafkaRecord
from techport_shared.topics import partner_topics

from tests.faults.harness import Platform, reset_group_to_beginning
from tests.faults.load import Dataset, LoadGenerator
from tests.faults.reconcile import read_topic_to_end, reconcile, report, under_load
from tests.kafka_helpers import produce

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.timeout(420)]


async def test_1_kill_9_of_each_service_in_turn_mid_batch(shared_platform: Platform) -> None:
    async def kill_each_in_turn(platform: Platform) -> None:
        for name in ("members", "matching", "notifications", "gateway"):
            platform.services[name].kill()
            await asyncio.sleep(1.0)
            await platform.restart(name)

    # A digest is sent, then marked sent in the database: a kill -9 between the SMTP server's accept and that
    # commit sends it again on restart (same Message-ID, so mail systems can drop it). Measured, not assumed.
    state = await under_load(shared_platform, "kill-9", kill_each_in_turn, 20.0, allow_resent_email=True)
    resent = sum(n - 1 for n in state.mails.values() if n > 1)
    print(f"[kill-9] emails sent twice through the accept-to-commit window: {resent} of {len(state.mails)}")
    assert resent <= 2  # at most what was in flight at the one moment notifications died


async def test_2_kafka_broker_stopped_for_20_s_then_restarted(shared_platform: Platform) -> None:
    async def broker_away(platform: Platform) -> None:
        await asyncio.to_thread(platform.kafka.stop_node, 0)
        await asyncio.sleep(20.0)
        await asyncio.to_thread(platform.kafka.start_node, 0)

    await under_load(shared_platform, "broker-down", broker_away)


# topic -> the services that consume it. Partner ingress is not here: members answers a partner's unreadable
# record on the rejected topic (the partner reads that topic, not our DLQ), checked below.
POISON_TOPICS = {
    "techport.organisations.v1": {"matching", "notifications"},
    "techport.students.v1": {"matching", "notifications"},
    "techport.vacancies.v1": {"matching", "notifications"},
    "techport.matches.v1": {"notifications"},
    "techport.partnerships.v1": {"notifications"},
}


async def test_4_poison_records_on_every_consumed_topic(shared_platform: Platform) -> None:
    data = Dataset.build()
    tag = data.tag

    async def poison(platform: Platform) -> None:
        ce = {"ce_specversion": b"1.0", "ce_source": b"/partners/nobody", "ce_type": b"x", "ce_id": b"p1"}
        json_type = {"content-type": b"application/json"}
        huge = b'{"blob": "' + b"x" * 900_000 + b'"}'
        for topic in [partner_topics(data.organisations[0]["organisation_id"]).ingress, *POISON_TOPICS]:
            await produce(
                platform.bootstrap,
                topic,
                KafkaRecord(f"p-{tag}-not-json".encode(), b"{this is not json", {**ce, **json_type}),
                KafkaRecord(f"p-{tag}-wrong-shape".encode(), b'{"hello": "world"}', json_type),
                KafkaRecord(f"p-{tag}-huge".encode(), huge, json_type),
            )

    state = await under_load(shared_platform, "poison", poison, data=data)
    for topic, services in POISON_TOPICS.items():
        for service in services:
            dead = [d for d in state.dead_letters if d["dlq_topic"] == topic and d["dlq_service"] == service]
            assert len(dead) == 3, (topic, service, dead)
            assert all(d["dlq_error"] and d["dlq_attempts"] for d in dead)
    assert len(state.dead_letters) == sum(len(s) for s in POISON_TOPICS.values()) * 3
    # On the partner's ingress topic each of the three is rejected back to the partner, with the problem (one
    # with its ce_id, two without any: named by their place in the topic).
    partner = partner_topics(data.organisations[0]["organisation_id"])
    rejections = [
        json.loads(r.value)
        for r in await read_topic_to_end(shared_platform.bootstrap, partner.rejected)
        if json.loads(r.value)["ce_id"] == "p1" or json.loads(r.value)["ce_id"].startswith(partner.ingress)
    ]
    assert len(rejections) == 3, rejections
    assert all(e["field"] and e["message"] for r in rejections for e in r["errors"])
    # And what the partner wrote is transport, not storage: members deleted the records it handled.
    left = [
        r
        for r in await read_topic_to_end(shared_platform.bootstrap, partner.ingress)
        if r.key.startswith(f"p-{tag}-".encode())
    ]
    assert left == [], f"{len(left)} handled partner records still on the topic"


async def test_5_duplicate_delivery_and_a_consumer_group_reset_to_the_beginning(
    shared_platform: Platform,
) -> None:
    data = Dataset.build()
    load = LoadGenerator(shared_platform, data)
    await load.register_organisations()
    await load.run(duration_s=8.0, duplicate=True)  # every input sent twice
    await reconcile(shared_platform, data)
    for service in ("matching", "notifications"):
        shared_platform.services[service].stop()
        again = await reset_group_to_beginning(shared_platform.bootstrap, service)
        await shared_platform.restart(service)
        await shared_platform.wait_caught_up(service)
        print(f"[duplicates] group {service} reset to the beginning: {again} records read again")
        assert again > 0
    state = await reconcile(shared_platform, data)
    print(report("duplicates", load.sent, state))


async def test_6_a_second_matching_instance_started_and_stopped_under_load(shared_platform: Platform) -> None:
    async def rebalance(platform: Platform) -> None:
        second = platform.second_instance("matching")
        second.start()
        await second.wait_ready()
        await asyncio.sleep(4.0)
        second.stop()

    await under_load(shared_platform, "rebalance", rebalance, 16.0)


async def test_7_smtp_server_down_for_a_while_then_back(shared_platform: Platform) -> None:
    async def smtp_away(platform: Platform) -> None:
        platform.sink.stop()
        await asyncio.sleep(15.0)
        platform.sink.start()

    await under_load(shared_platform, "smtp-down", smtp_away)
