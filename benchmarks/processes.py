"""What the benchmarks that run services as processes share: starting one, waiting until it answers, and
producing records to a topic."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

# The identity secret the benchmarks' services share (and sign their own operator tokens with).
SECRET = "bench-identity-secret-0123456789abcdef"


def service_env(bootstrap: str, **settings: str) -> dict[str, str]:
    """The environment of a benchmark's service processes: this one's, the broker, the secret, `settings`."""
    return dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, TECHPORT_IDENTITY_SECRET=SECRET, **settings)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def serve(service: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A service as it runs in production: `python -m techport_<service> serve`."""
    return spawn(["-m", f"techport_{service}", "serve", "--host", "127.0.0.1", "--port", str(port)], env, log)


def wait_ready(url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


async def produce(producer: AIOKafkaProducer, topic: str, records: list[Any]) -> None:
    """Send binary-mode records (`KafkaRecord`s), then wait until the broker has them all."""
    for record in records:
        await producer.send(topic, record.value, key=record.key, headers=record.header_list())
    await producer.flush()


async def send(bootstrap: str, topic: str, records: list[Any]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await produce(producer, topic, records)
    finally:
        await producer.stop()


def metric_total(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` (with these `labels`) in a service's `/metrics` text."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )
