"""`techport matching reindex`: rebuild the matching index from its database and report what it holds; with
`--service`, the running service rebuilds its own index too (POST /admin/reindex, operator identity)."""

from __future__ import annotations

import asyncio

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from techport_matching.service import Matching
from techport_matching.settings import MatchingSettings
from techport_shared.db import create_engine, session_factory
from techport_shared.identity import IDENTITY_HEADER, OPERATOR, issue_token

console = Console()


async def _rebuild(settings: MatchingSettings) -> Matching:
    engine = create_engine(settings.database_url)
    matching = Matching(settings)
    try:
        with Progress(
            TextColumn("[bold]reindex[/] students"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("students", total=None)
            await matching.rebuild_index(
                session_factory(engine),
                lambda done, total: progress.update(task, completed=done, total=total),
            )
    finally:
        await engine.dispose()
    return matching


def reindex(service: str | None) -> None:
    settings = MatchingSettings()
    matching = asyncio.run(_rebuild(settings))
    stats = matching.index.stats()
    console.print(
        f"index: {stats.students:,} students, {stats.vacancies:,} open vacancies, {stats.skills:,} skills, "
        f"{stats.nbytes / 2**20:.1f} MiB of arrays"
    )
    if service:
        token = issue_token(OPERATOR, settings.identity_secret.get_secret_value())
        response = httpx.post(
            f"{service.rstrip('/')}/admin/reindex", headers={IDENTITY_HEADER: token}, timeout=600
        )
        response.raise_for_status()
        console.print(f"service rebuilt its index: {response.json()}")
