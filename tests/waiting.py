"""Waiting for something the platform does asynchronously, with a deadline."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], Any], timeout_s: float = 30.0, interval_s: float = 0.1) -> Any:
    """Call `check` (sync or async) until it returns something truthy; return that."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {timeout_s}s")
        await asyncio.sleep(interval_s)
