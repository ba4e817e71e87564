"""The platform as an operator runs it: every service its own process (uvicorn), a real Kafka (one broker, or
three), SQLite files or a real PostgreSQL, and a real SMTP server; with the means to break each of them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from techport_dev.kafka import LocalKafkaCluster, free_port
from techport_dev.postgres import LocalPostgres
from techport_dev.smtp import SmtpSink
from techport_shared.kafka import ensure_topics
from techport_shared.settings import KafkaSettings

SERVICES = ("members", "matching", "notifications", "gateway")
SECRET = "faults-identity-secret-0123456789abcdef"
OPERATOR_KEY = "op_faults_operator_key_0123456789abcdef"


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    f"techport_{self.name}",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """kill -9: no shutdown, no flush, no goodbye to the broker."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    async def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with httpx.AsyncClient() as client:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/readyz", timeout=2)).status_code == 200:
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"{self.name} not ready:\n{self.log.read_text()[-3000:]}")
                await asyncio.sleep(0.2)


@dataclass
class Platform:
    var: Path
    kafka: LocalKafkaCluster
    bootstrap: str
    sink: SmtpSink
    postgres: LocalPostgres | None
    database_urls: dict[str, str]
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    extra: list[ServiceProcess] = field(default_factory=list)

    @property
    def gateway(self) -> str:
        return f"{self.services['gateway'].url}/api/v1"

    def client(self, key: str | None = OPERATOR_KEY) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.gateway, headers=headers, timeout=20)

    async def restart(self, name: str) -> None:
        service = self.services[name]
        service.start()
        await service.wait_ready()

    def second_instance(self, name: str) -> ServiceProcess:
        """Another replica of a service: same database, same consumer group, its own port."""
        first = self.services[name]
        other = ServiceProcess(f"{name}", free_port(), dict(first.env), self.var / f"{name}-2.log")
        self.extra.append(other)
        return other

    async def wait_caught_up(self, group: str, timeout_s: float = 120.0) -> None:
        """Until `group` has committed the end of every partition it reads."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        deadline = asyncio.get_running_loop().time() + timeout_s
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await admin.start()
        await consumer.start()
        try:
            while True:
                committed = await admin.list_consumer_group_offsets(group)
                ends = await consumer.end_offsets(list(committed))
                if committed and all(committed[tp].offset >= ends[tp] for tp in committed):
                    return
                assert asyncio.get_running_loop().time() < deadline, f"{group} did not catch up"
                await asyncio.sleep(0.5)
        finally:
            await consumer.stop()
            await admin.close()

    async def rows(self, service: str, query: str) -> list[tuple[Any, ...]]:
        url = self.database_urls[service]
        if url.startswith("sqlite"):
            connection = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
            try:
                return [tuple(r) for r in connection.execute(query).fetchall()]
            finally:
                connection.close()
        pg = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await pg.fetch(query)]
        finally:
            await pg.close()

    async def tables(self, service: str) -> list[str]:
        if self.database_urls[service].startswith("sqlite"):
            rows = await self.rows(service, "SELECT name FROM sqlite_master WHERE type='table'")
        else:
            rows = await self.rows(
                service, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        return [r[0] for r in rows]


@contextlib.asynccontextmanager
async def running_platform(
    var: Path, brokers: int = 1, database: str = "sqlite", **overrides: str
) -> AsyncIterator[Platform]:
    """Start everything; stop everything at the end, whatever state the test left it in."""
    await asyncio.to_thread(var.mkdir, parents=True, exist_ok=True)
    cluster = LocalKafkaCluster(brokers=brokers, data_dir=var / "kafka")
    bootstrap = await asyncio.to_thread(cluster.start)
    replication = "3" if brokers >= 3 else "1"
    min_isr = "2" if brokers >= 3 else "1"
    kafka_settings = KafkaSettings(
        kafka_bootstrap_servers=bootstrap,
        topic_replication_factor=int(replication),
        topic_min_insync_replicas=int(min_isr),
    )
    await ensure_topics(kafka_settings)
    postgres = LocalPostgres() if database == "postgresql" else None
    sink = SmtpSink(var / "mail")
    platform = Platform(var, cluster, bootstrap, sink, postgres, {})
    try:
        if postgres is not None:
            await asyncio.to_thread(postgres.start)
            urls = {n: await asyncio.to_thread(postgres.create_database, n) for n in SERVICES}
        else:
            urls = {n: f"sqlite:///{var / n}.db" for n in SERVICES}
        sink.start()
        ports = {n: free_port() for n in SERVICES}
        common = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOPIC_REPLICATION_FACTOR": replication,
            "TOPIC_MIN_INSYNC_REPLICAS": min_isr,
            "TECHPORT_IDENTITY_SECRET": SECRET,
            "TECHPORT_OPERATOR_KEY": OPERATOR_KEY,
            "CONSUMER_MAX_ATTEMPTS": "3",
            "CONSUMER_BACKOFF_INITIAL_S": "0.1",
            "CONSUMER_BACKOFF_MAX_S": "1",
            "OUTBOX_POLL_INTERVAL_S": "0.2",
            "OUTBOX_BACKOFF_MAX_S": "1",
            "NOTIFY_DIGEST_SECONDS": "1",
            "NOTIFICATIONS_POLL_INTERVAL_S": "0.2",
            "NOTIFICATIONS_BACKOFF_INITIAL_S": "0.5",
            "NOTIFICATIONS_BACKOFF_MAX_S": "2",
            "NOTIFICATIONS_SEND_ATTEMPTS": "100",
            "SMTP_HOST": sink.host,
            "SMTP_PORT": str(sink.port),
            "TECHPORT_PUBLIC_URL": f"http://127.0.0.1:{ports['gateway']}/api/v1",
            "GATEWAY_RATE_LIMIT": "10000/second",
            **{f"{n.upper()}_URL": f"http://127.0.0.1:{ports[n]}" for n in SERVICES if n != "gateway"},
            **{f"{n.upper()}_DATABASE_URL": urls[n] for n in SERVICES},
            **overrides,
        }
        platform.database_urls = urls
        for name in SERVICES:
            platform.services[name] = ServiceProcess(name, ports[name], dict(common), var / f"{name}.log")
            platform.services[name].start()
        await asyncio.gather(*(s.wait_ready() for s in platform.services.values()))
        yield platform
    finally:
        for service in [*platform.extra, *platform.services.values()]:
            service.stop()
        sink.stop()
        await asyncio.to_thread(cluster.stop, False)
        if postgres is not None:
            await asyncio.to_thread(postgres.close)


async def reset_group_to_beginning(bootstrap: str, group: str) -> int:
    """What `kafka-consumer-groups --reset-offsets --to-earliest` does, for a stopped group: returns how many
    records the group will read again."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = list(committed)
        consumer.assign(partitions)
        starts = await consumer.beginning_offsets(partitions)
        await consumer.commit({tp: starts[tp] for tp in partitions})
        return sum(committed[tp].offset - starts[tp] for tp in partitions)
    finally:
        await consumer.stop()
