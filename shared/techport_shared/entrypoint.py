"""The command a service's container runs: `python -m techport_<service> serve|migrate`.

`serve` runs the HTTP app with uvicorn; `migrate` upgrades the service's database to the newest schema and
exits (a Kubernetes init container or a compose one-shot runs it before the service starts).
"""

from __future__ import annotations

import argparse
import asyncio
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
