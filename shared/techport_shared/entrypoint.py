"""The command a service's container runs: `python -m techport_<service> serve|migrate`.

`serve` runs the HTTP app with uvicorn; `migrate` upgrades the service's database to the newest schema and
exits (a Kubernetes init container or a compose one-shot runs it before the service starts).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic_settings import BaseSettings

from techport_shared.logging import configure_logging, get_logger
from techport_shared.migrations import upgrade


def main(
    service: str,
    app_factory: str,
    settings: Callable[[], BaseSettings],
    migrations: Path,
    argv: Sequence[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m techport_{service}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    commands.add_parser("migrate", help="upgrade the database to the newest schema, then exit")
    args = parser.parse_args(argv)

    if args.command == "migrate":
        configure_logging(service)
        database_url: str = settings().database_url  # type: ignore[attr-defined]
        asyncio.run(upgrade(migrations, database_url))
        get_logger(__name__).info("database migrated", service=service)
        return

    import uvicorn

    _settle_heap(app_factory)
    # Access logs come from our own request middleware (structured, with the request id). uvloop and the
    # httptools parser: the C event loop and HTTP parser (benchmarks/gateway.py measures the difference).
    uvicorn.run(
        app_factory,
        factory=True,
        host=args.host,
        port=args.port,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


# Allocations (less deallocations) between young collections, where CPython's default is 700.
_YOUNG_THRESHOLD = 10_000


def _settle_heap(app_factory: str) -> None:
    """Import the service, then move everything made so far out of the garbage collector's sight.

    A service's heap is mostly what its imports made (SQLAlchemy, pydantic, FastAPI, FastStream: members has
    about 150,000 such objects, which live as long as the process). CPython's older collections walk them all,
    and its young collections come every 700 allocations, which one ORM batch passes many times over. Frozen,
    they are never walked again, and a larger first threshold makes the young collections rarer.
    `TECHPORT_GC_FREEZE=0` leaves the collector as CPython sets it, to measure the difference (the matching
    replicas benchmark: 1238-1281 students/s with two replicas without, 1472-1595 with).
    """
    if os.environ.get("TECHPORT_GC_FREEZE", "1") == "0":
        return
    importlib.import_module(app_factory.split(":", 1)[0])
    gc.collect()
    gc.freeze()
    gc.set_threshold(_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
