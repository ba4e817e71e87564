"""The project's own Kafka tooling starts one cluster of several brokers that survives losing one."""

from __future__ import annotations

import time
from pathlib import Path

from techport_dev.kafka import LocalKafkaCluster
from techport_shared.envelope import Envelope, to_binary
from techport_shared.kafka import ensure_topics
from techport_shared.settings import KafkaSettings
from techport_shared.topics import TopicSpec

from tests.kafka_helpers import produce, read_topic


async def test_three_brokers_form_one_cluster_that_survives_losing_one(tmp_path: Path) -> None:
    cluster = LocalKafkaCluster(brokers=3, data_dir=tmp_path / "kafka", heap_mb=384)
    started = time.perf_counter()
    cluster.start()
    print(f"three brokers started in {time.perf_counter() - started:.1f}s")
    try:
        settings = KafkaSettings(
            kafka_bootstrap_servers=cluster.bootstrap_servers,
            topic_replication_factor=3,
            topic_min_insync_replicas=2,
        )
        topic = TopicSpec("test.replicated", "test", "id", ())
        await ensure_topics(settings, (topic,))
        event = Envelope(type="t", source="/t", subject="k", data={"n": 1})
        await produce(cluster.bootstrap_servers, topic.name, to_binary(event))

        cluster.stop_node(2, kill=True)  # kill -9 one broker: two replicas remain, min ISR is met
        survivor = ",".join(node.address for node in cluster.nodes[:2])
        second = Envelope(type="t", source="/t", subject="k", data={"n": 2})
        await produce(survivor, topic.name, to_binary(second))
        records = await read_topic(survivor, topic.name, until=lambda found: len(found) == 2, timeout_s=60)
        assert [r.value for r in records] == [to_binary(event).value, to_binary(second).value]

        cluster.start_node(2)
        assert all(node.running() for node in cluster.nodes)
    finally:
        cluster.stop(graceful=False)
