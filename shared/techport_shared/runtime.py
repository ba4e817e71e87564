"""What every service wires the same way: its database, the Kafka broker, the outbox relay, the reliable
consumer, migrations at start, readiness checks, and FastStream inside FastAPI (faststream-fastapi)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaBroker
from faststream_fastapi import FastStreamAPI
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from techport_shared import web
from techport_shared.consumer import DeadLetters, ReliableConsumer
from techport_shared.db import SessionFactory, create_engine, session_factory
from techport_shared.kafka import BrokerPublisher, create_broker
from techport_shared.logging import configure_logging, get_logger
from techport_shared.messaging import MessagingTables
from techport_shared.migrations import upgrade
from techport_shared.outbox import OutboxRelay
from techport_shared.settings import ServiceSettings
from techport_shared.uow import UnitOfWork

log = get_logger(__name__)
# How long a step of shutdown may take before it is given up (Kubernetes allows 30 s in all by default).
_STOP_S = 10.0


@dataclass
class ServiceRuntime:
    name: str
    database_url: str
    engine: AsyncEngine
    sessions: SessionFactory
    tables: MessagingTables
    broker: KafkaBroker
    relay: OutboxRelay
    consumer: ReliableConsumer
    dead_letters: DeadLetters
    migrations: Path
    unit_of_work: type[UnitOfWork] = UnitOfWork
    migrate_on_start: bool = True
    identity_secret: SecretStr | None = None
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _stops: list[Callable[[], None]] = field(default_factory=list)
    _stopping: bool = False

    def background(
        self, work: Callable[[], Awaitable[Any]], name: str, stop: Callable[[], None] | None = None
    ) -> None:
        """Run `work()` for the life of the service, started again should it ever end before shutdown; it is
        stopped and cancelled at shutdown."""
        self._tasks.append(asyncio.create_task(self._supervise(work, name), name=name))
        if stop is not None:
            self._stops.append(stop)

    async def _supervise(self, work: Callable[[], Awaitable[Any]], name: str) -> None:
        # A loop that dies unseen (an error no one expected, a CancelledError from a library's future) would
        # leave a running process that no longer publishes or sends: log it and start the work again.
        while not self._stopping:
            try:
                await work()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stopping or (task is not None and task.cancelling()):
                    raise
                log.error("background work was cancelled from inside; starting it again", task=name)
            except Exception as exc:
                log.error("background work failed; starting it again", task=name, error=repr(exc))
            else:
                if self._stopping:
                    return
                log.error("background work ended; starting it again", task=name)
            await asyncio.sleep(1.0)

    def uow(self) -> Any:
        """A unit of work of this service (its repositories), waking the outbox relay when it commits."""
        return self.unit_of_work(self.sessions, self.tables, on_commit=self.relay.wake)

    async def database_ready(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def broker_ready(self) -> None:
        if not await self.broker.ping(timeout=2):
            raise ConnectionError("Kafka unreachable")

    async def wait_for_assignment(self, timeout_s: float = 30.0) -> None:
        """Until every subscriber has partitions and knows where it reads from (tests, operations)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        for subscriber in self.broker.subscribers:
            consumer: Any = getattr(subscriber, "consumer", None)
            while consumer is None or not consumer.assignment():
                if (
                    consumer is not None
                    and getattr(subscriber, "pattern", None)
                    and not consumer.subscription()
                ):
                    break  # subscribed by pattern, and no topic matches yet: nothing to be assigned
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{self.name}: consumers not assigned in {timeout_s}s")
                await asyncio.sleep(0.05)
                consumer = getattr(subscriber, "consumer", None)
            for partition in consumer.assignment():
                await consumer.position(partition)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        self._stopping = False
        if self.migrate_on_start:
            await upgrade(self.migrations, self.database_url)
        for start in self.on_start:
            await start()
        self.background(self.relay.run, f"{self.name}-outbox-relay", stop=self.relay.stop)
        self.background(self.consumer.report_lag, f"{self.name}-consumer-lag")
        self.background(self.consumer.watch_fetchers, f"{self.name}-consumer-fetchers")
        try:
            yield
        finally:
            # Bounded: a service that does not stop is killed by its orchestrator with its work half done;
            # better to say what hung and go on to close the database.
            try:
                await asyncio.wait_for(self.stop_background(), timeout=_STOP_S)
            except TimeoutError:
                hung = [task.get_name() for task in self._tasks if not task.done()]
                log.error("background work did not stop in time", tasks=hung, timeout_s=_STOP_S)
            try:
                await asyncio.wait_for(self.engine.dispose(), timeout=_STOP_S)
            except TimeoutError:
                log.error("database connections did not close in time", timeout_s=_STOP_S)

    async def stop_background(self) -> None:
        self._stopping = True
        for stop in self._stops:
            stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._stops.clear()

    def http_app(
        self,
        title: str,
        description: str,
        router: APIRouter,
        larger_bodies: dict[str, int] | None = None,
        **state: Any,
    ) -> FastStreamAPI:
        """The service's FastAPI app with the broker started and stopped by its lifespan; health, readiness,
        metrics; the caller's identity verified on every route that asks for it (web.Caller)."""
        app = FastAPI(title=title, description=description, version="1.0.0", lifespan=self.lifespan)
        app.state.runtime = self
        secret = self.identity_secret
        if secret is None:
            raise ValueError("a service needs the identity secret (TECHPORT_IDENTITY_SECRET)")
        app.state.caller = web.identity_dependency(secret.get_secret_value)
        for key, value in state.items():
            setattr(app.state, key, value)
        app.include_router(router)
        web.install(
            app, self.name, {"database": self.database_ready, "kafka": self.broker_ready}, larger_bodies
        )
        return FastStreamAPI(self.broker, application=app)


def build_runtime(
    name: str,
    settings: ServiceSettings,
    tables: MessagingTables,
    migrations: Path,
    unit_of_work: type[UnitOfWork] = UnitOfWork,
) -> ServiceRuntime:
    configure_logging(name)
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    broker = create_broker(settings.kafka, client_id=name)
    publisher = BrokerPublisher(broker)
    relay = OutboxRelay(name, sessions, tables, publisher, settings.outbox)
    dead_letters = DeadLetters(name, publisher)
    reliable = ReliableConsumer(name, broker, dead_letters, settings.consumer)
    return ServiceRuntime(
        name=name,
        database_url=settings.database_url,
        engine=engine,
        sessions=sessions,
        tables=tables,
        broker=broker,
        relay=relay,
        consumer=reliable,
        dead_letters=dead_letters,
        migrations=migrations,
        unit_of_work=unit_of_work,
        migrate_on_start=settings.migrate_on_start,
        identity_secret=settings.identity_secret,
    )
