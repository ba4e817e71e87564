from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.faults.harness import Platform, running_platform


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def shared_platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Platform]:
    """One platform (one broker, SQLite) for the faults and checks that need nothing special."""
    async with running_platform(tmp_path_factory.mktemp("faults")) as platform:
        yield platform
