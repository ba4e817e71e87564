"""Real infrastructure for the suite: one Kafka for the session (the project's own tooling picks it), one
PostgreSQL server, and a database URL fixture that runs store tests on SQLite and on PostgreSQL."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from techport_dev.kafka import kafka_endpoint
from techport_dev.postgres import LocalPostgres
from techport_shared.kafka import ensure_topics
from techport_shared.settings import KafkaSettings

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with kafka_endpoint() as (bootstrap, _cluster):
        yield bootstrap


@pytest.fixture(scope="session")
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(kafka_bootstrap_servers=kafka_bootstrap, topic_partitions_default=3)


@pytest.fixture(scope="session")
async def kafka_topics(kafka_settings: KafkaSettings) -> KafkaSettings:
    await ensure_topics(kafka_settings)
    return kafka_settings


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    with LocalPostgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    server: LocalPostgres = request.getfixturevalue("postgres_server")
    return server.create_database(f"t{os.getpid()}_{next(_db_counter)}")


@pytest.fixture(autouse=True, scope="session")
def _quiet_http_client_logs() -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)


# Fixtures that start or need real infrastructure, and the mark a test that uses them gets, so that
# `make test-fast` (-m "not kafka and not postgres") runs exactly the tests that need neither.
_NEEDS = {
    "kafka_bootstrap": "kafka",
    "kafka_settings": "kafka",
    "kafka_topics": "kafka",
    "postgres_server": "postgres",
    "shared_platform": "kafka",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        for fixture, mark in _NEEDS.items():
            if fixture in fixtures:
                item.add_marker(getattr(pytest.mark, mark))
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_url") == "postgresql":
            item.add_marker(pytest.mark.postgres)
        if item.nodeid.startswith(("tests/test_platform_run.py", "tests/faults/")):
            item.add_marker(pytest.mark.kafka)
    # Longest first: xdist's loadscope hands modules to the workers in this order, so the modules that run a
    # minute or more start at once and the last ones to start are short. (`make run`'s test came last by
    # name, and its minute was the suite's tail.) A stable sort: each module's tests keep their order.
    items.sort(key=lambda item: not item.nodeid.startswith(_LONG_MODULES))


# The modules whose tests take a minute or more (`make test` lists the slowest).
_LONG_MODULES = (
    "tests/test_platform_run.py",
    "tests/faults/",
    "tests/gateway/test_schemathesis.py",
    "tests/members/test_partner_access.py",
    "tests/shared/test_publisher_after_broker_restart.py",
)
