"""A service's background work (outbox relay, email sender, lag sampler) is started again if it ever ends
before shutdown, whatever ended it; at shutdown it stops for good."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import SecretStr
from techport_shared.runtime import build_runtime
from techport_shared.settings import ServiceSettings

from tests.shared.kit import tables


async def test_background_work_that_fails_returns_or_is_cancelled_from_inside_is_started_again(
    tmp_path: Path,
) -> None:
    settings = ServiceSettings(
        database_url=f"sqlite:///{tmp_path / 'kit.db'}",
        consumer_group="kit",
        identity_secret=SecretStr("s" * 32),
    )
    runtime = build_runtime("kit", settings, tables, tmp_path)
    runs: list[str] = []
    forever = asyncio.Event()

    async def work() -> None:
        runs.append("run")
        if len(runs) == 1:
            raise RuntimeError("an error no one expected")
        if len(runs) == 2:
            return  # a loop that ended
        if len(runs) == 3:
            raise asyncio.CancelledError  # as a library's cancelled future raises it in our await
        await forever.wait()

    runtime.background(work, "kit-work")
    for _ in range(100):
        if len(runs) == 4:
            break
        await asyncio.sleep(0.1)
    assert len(runs) == 4

    await runtime.stop_background()  # shutdown: cancelled, and not started again
    await asyncio.sleep(1.5)
    assert len(runs) == 4
    await runtime.engine.dispose()
