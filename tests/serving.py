"""Serve an ASGI app for real (uvicorn, lifespan on) on a free loopback port, inside the test's event loop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from techport_dev.kafka import free_port


@asynccontextmanager
async def serve(app: Any, port: int | None = None) -> AsyncIterator[str]:
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises what stopped the server
            raise RuntimeError("server exited before it started")
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        done, _ = await asyncio.wait([task], timeout=30)
        if not done:
            # Say where the shutdown hangs: every task's stack, before the server is cancelled.
            for other in asyncio.all_tasks():
                print(f"--- task {other.get_name()}", file=sys.stderr)
                other.print_stack(limit=15, file=sys.stderr)
            task.cancel()
            raise TimeoutError("the server did not stop in 30 s; the stacks of its tasks are above")
        task.result()
