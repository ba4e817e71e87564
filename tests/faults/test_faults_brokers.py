"""The loss of one broker of three, under load: a platform of its own (three brokers), in a module of its own
so that the suite's workers run it beside the other faults."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faults.harness import Platform, running_platform
from tests.faults.reconcile import under_load

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.timeout(420)]


async def test_8_one_of_three_brokers_killed_under_load_and_brought_back(tmp_path: Path) -> None:
    async def kill_a_broker(platform: Platform) -> None:
        await asyncio.to_thread(platform.kafka.stop_node, 1, True)
        await asyncio.sleep(10.0)
        await asyncio.to_thread(platform.kafka.start_node, 1)

    async with running_platform(tmp_path / "three", brokers=3) as platform:
        await under_load(platform, "broker-killed", kill_a_broker, 16.0)
