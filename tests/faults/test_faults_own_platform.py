"""Faults that need a platform of their own on PostgreSQL: the database away, two notifications replicas. A
module of their own, so that the suite's workers run them beside the faults on the shared platform
(tests/faults/test_faults.py) and the loss of a broker (tests/faults/test_faults_brokers.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faults.harness import Platform, running_platform
from tests.faults.reconcile import under_load

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.timeout(420)]


@pytest.mark.postgres
async def test_3_database_unavailable_for_20_s(tmp_path: Path) -> None:
    async def database_away(platform: Platform) -> None:
        assert platform.postgres is not None
        await asyncio.to_thread(platform.postgres.stop, "fast")
        await asyncio.sleep(20.0)
        await asyncio.to_thread(platform.postgres.restart)

    async with running_platform(tmp_path / "pg", database="postgresql") as platform:
        await under_load(platform, "database-down", database_away)


@pytest.mark.postgres
async def test_6b_two_notifications_replicas_on_postgresql_send_each_email_once(tmp_path: Path) -> None:
    # Each replica consumes part of the partitions and sends what is due: row locks keep a digest from being
    # sent twice or from growing while it is sent (see NotificationsRepository.claim_for_sending).
    async def no_further_fault(platform: Platform) -> None:
        return None

    async with running_platform(tmp_path / "notify-pair", database="postgresql") as platform:
        second = platform.second_instance("notifications")
        second.start()
        await second.wait_ready()
        state = await under_load(platform, "notifications-pair", no_further_fault)
        logs = second.log.read_text()
    assert "Processed" in logs  # the second replica did take part
    assert all(n == 1 for n in state.mails.values())
