"""History benchmark: what a consumer's batch reads costs once the service has handled many events before.

Every batch asks the processed-messages table which of its events were handled already (the dedupe read).
That table keeps every event a consumer ever handled, so the read must cost an index search however long it
is. Measured on SQLite (the embedded default) at a short history, the baseline of the same run, and at longer
ones. It prints figures and ratios and asserts nothing. `python -m benchmarks history [--sizes 1000,300000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import MetaData
from techport_shared.db import create_engine, session_factory
from techport_shared.messaging import messaging_tables
from techport_shared.uow import UnitOfWork

BATCH = 20  # records of a batch at the pipeline benchmark's steady rate
SOURCES = ("/partners/school-a", "/partners/school-b")


async def _read_cost(path: Path, handled: int, rounds: int) -> float:
    """Milliseconds of one batch's dedupe read with `handled` events handled before (half the batch among
    them, half new)."""
    metadata = MetaData()
    tables = messaging_tables(metadata)
    engine = create_engine(f"sqlite:///{path}")
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(path) as db:  # filled directly: the benchmark is the read, not the writes
        db.executemany(
            "INSERT INTO processed_messages (consumer, ce_source, ce_id, processed_at) VALUES (?, ?, ?, ?)",
            ((f"consumer-{i % 3}", SOURCES[i % 2], f"event-{i}", now) for i in range(handled)),
        )
    sessions = session_factory(engine)
    try:
        started = time.perf_counter()
        for n in range(rounds):
            old = [
                ("consumer-0", SOURCES[i % 2], f"event-{(n * 7919 + i * 3) % handled}")
                for i in range(BATCH // 2)
            ]
            new = [("consumer-0", SOURCES[i % 2], f"new-{n}-{i}") for i in range(BATCH // 2)]
            async with UnitOfWork(sessions, tables) as uow:
                await uow.load_processed(old + new)
        return (time.perf_counter() - started) * 1000 / rounds
    finally:
        await engine.dispose()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks history")
    parser.add_argument("--sizes", default="1000,100000,300000")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    costs: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as work:
        for size in sizes:
            costs[size] = asyncio.run(_read_cost(Path(work) / f"history-{size}.db", size, args.rounds))
    baseline = costs[sizes[0]]
    print(f"history benchmark: a batch's dedupe read ({BATCH} events) on SQLite, by events handled before")
    for size in sizes:
        print(
            f"  {size:>9,} handled before: {costs[size]:6.2f} ms a batch   ratio to {sizes[0]:,}: "
            f"{costs[size] / baseline:.2f}x"
        )
