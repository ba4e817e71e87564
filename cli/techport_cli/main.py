"""The `techport` command."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from techport_shared.kafka import ensure_topics

from techport_cli.topics import kafka_settings

app = typer.Typer(help="Techport platform: run it, feed it, operate it.", no_args_is_help=True)
try:  # the development tooling (techport-dev): in the workspace, not in the operators' image
    from techport_dev.__main__ import app as infra_app

    app.add_typer(infra_app, name="infra")
except ImportError:
    pass
topics_app = typer.Typer(help="Kafka topics of the catalog.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
matching_app = typer.Typer(help="The matching service.", no_args_is_help=True)
app.add_typer(matching_app, name="matching")


dlq_app = typer.Typer(help="The dead-letter topic.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


@dlq_app.command("list")
def dlq_list(wait: float = typer.Option(0.0, help="Also wait this long for records still arriving.")) -> None:
    """Dead-lettered records: where they came from, which service gave up, why, after how many attempts."""
    from techport_cli.dlq import dead_letters

    _print_dead_letters("dead letters", asyncio.run(dead_letters(kafka_settings(), wait)))


@dlq_app.command("replay")
def dlq_replay(
    service: str = typer.Option(..., help="The service that gave up (the dlq_service header)."),
    topic: str = typer.Option(..., help="The topic the records came from (dlq_topic); they go back there."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would be replayed."),
) -> None:
    """Put what SERVICE dead-lettered from TOPIC back on TOPIC, once (since the last replay of that pair)."""
    from techport_cli.dlq import replay

    report = asyncio.run(replay(kafka_settings(), service, topic, dry_run=dry_run))
    verb = "would replay" if report.dry_run else "replayed"
    _print_dead_letters(f"{verb} {len(report.replayed)} to {topic}", report.replayed)


def _print_dead_letters(title: str, records: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("dlq offset", "from", "service", "attempts", "error"):
        table.add_column(column)
    for dead in records:
        h = dead.headers
        table.add_row(
            f"{dead.partition}:{dead.offset}",
            f"{h.get('dlq_topic')}[{h.get('dlq_partition')}]@{h.get('dlq_offset')}",
            h.get("dlq_service", ""),
            h.get("dlq_attempts", ""),
            h.get("dlq_error", "")[:120],
        )
    Console(width=200).print(table)


outbox_app = typer.Typer(
    help="Outbox events a broker refused for good (too large, invalid): parked, waiting for an operator.",
    no_args_is_help=True,
)
app.add_typer(outbox_app, name="outbox")
SERVICES_WITH_OUTBOX = ("members", "matching", "notifications")


def _outbox(service: str, work: Any) -> Any:
    """Run `work(sessions, tables)` on the service's database (`<SERVICE>_DATABASE_URL`, else var/)."""
    from sqlalchemy import MetaData
    from techport_shared.db import create_engine, session_factory
    from techport_shared.messaging import messaging_tables

    if service not in SERVICES_WITH_OUTBOX:
        raise typer.BadParameter(f"one of {', '.join(SERVICES_WITH_OUTBOX)}", param_hint="--service")

    async def _run() -> Any:
        engine = create_engine(_database_url(service))
        try:
            return await work(session_factory(engine), messaging_tables(MetaData()))
        finally:
            await engine.dispose()

    return asyncio.run(_run())


@outbox_app.command("list")
def outbox_list(service: str = typer.Option(..., help="members, matching or notifications")) -> None:
    """The parked events of SERVICE: what, how large, why the broker refused it."""
    from rich.console import Console
    from rich.table import Table
    from techport_shared.outbox import parked_events

    table = Table(title=f"parked in {service}'s outbox")
    for column in ("id", "topic", "key", "type", "bytes", "parked at", "reason"):
        table.add_column(column)
    for event in _outbox(service, parked_events):
        table.add_row(
            str(event.id), event.topic, event.key or "", event.ce_type, str(event.size),
            event.parked_at.isoformat(timespec="seconds"), event.reason[:160],
        )  # fmt: skip
    Console(width=220).print(table)


@outbox_app.command("retry")
def outbox_retry(
    service: str = typer.Option(..., help="members, matching or notifications"),
    ids: list[int] = typer.Option(None, "--id", help="Only these (default: every parked event)."),
) -> None:
    """Put parked events back in line, after the cause is fixed (e.g. the broker takes larger records)."""
    from techport_shared.outbox import retry_parked

    count = _outbox(service, lambda sessions, tables: retry_parked(sessions, tables, ids or None))
    typer.echo(f"{count} parked events of {service} will be published again")


@outbox_app.command("drop")
def outbox_drop(
    service: str = typer.Option(..., help="members, matching or notifications"),
    ids: list[int] = typer.Option(None, "--id", help="Only these (default: every parked event)."),
) -> None:
    """Delete parked events for good; the events of their keys waiting behind them go on."""
    from techport_shared.outbox import drop_parked

    count = _outbox(service, lambda sessions, tables: drop_parked(sessions, tables, ids or None))
    typer.echo(f"dropped {count} parked events of {service}")


notifications_app = typer.Typer(help="The notifications service.", no_args_is_help=True)
app.add_typer(notifications_app, name="notifications")


@notifications_app.command("retry")
def notifications_retry() -> None:
    """Put failed notifications back on the schedule (NOTIFICATIONS_DATABASE_URL); the service sends them."""
    from techport_notifications.handlers import HANDLERS, RetryFailed
    from techport_notifications.store import NotificationsUnitOfWork, tables
    from techport_shared.db import create_engine, session_factory
    from techport_shared.envelope import Origin
    from techport_shared.identity import OPERATOR
    from techport_shared.messagebus import Context, MessageBus

    async def _retry() -> int:
        engine = create_engine(_database_url("notifications"))
        sessions = session_factory(engine)
        bus = MessageBus(lambda: NotificationsUnitOfWork(sessions, tables), HANDLERS)
        try:
            rescheduled: int = await bus.handle(RetryFailed(), Context(OPERATOR, Origin.of_request("cli")))
            return rescheduled
        finally:
            await engine.dispose()

    typer.echo(f"rescheduled {asyncio.run(_retry())} failed notifications")


def _database_url(service: str) -> str:
    """A service's database, as the service finds it (`<SERVICE>_DATABASE_URL`, else its SQLite file)."""
    import os

    return os.environ.get(f"{service.upper()}_DATABASE_URL", f"sqlite:///var/{service}.db")


@matching_app.command("reindex")
def matching_reindex(
    service: str | None = typer.Option(
        None, help="Also tell the running matching service at this URL to rebuild."
    ),
) -> None:
    """Rebuild the matching index from matching's database (MATCHING_DATABASE_URL), with a progress bar."""
    from techport_cli.reindex import reindex

    reindex(service)


@app.command()
def run(var: Path = typer.Option(Path("var"), help="Where data, logs, mail and endpoints.json go.")) -> None:
    """Start the whole platform on embedded defaults until Ctrl-C."""
    from techport_cli.platform import run_platform

    run_platform(var)


@app.command()
def publish(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A CloudEvent as JSON."),
    topic: str | None = typer.Option(
        None, help="Topic to publish on; by default the ingress topic of the partner the source names."
    ),
    structured: bool = typer.Option(False, help="Structured content mode instead of binary."),
) -> None:
    """Publish a CloudEvent from a JSON file, as a partner system would (to its own ingress topic)."""
    from techport_cli.publish import publish_file

    document = json.loads(file.read_text(encoding="utf-8"))
    envelope, written = asyncio.run(publish_file(document, topic, kafka_settings(), structured))
    typer.echo(f"published {envelope.type} id={envelope.id} to {written}")


@app.command()
def rejections(
    partner: str = typer.Argument(..., help="The partner's organisation id (the key of its rejections)."),
    wait: float = typer.Option(5.0, help="Seconds to read the topic for."),
) -> None:
    """Print the partner's rejected ingress events, with every error, as JSON lines."""
    from techport_cli.publish import read_rejections

    for rejection in asyncio.run(read_rejections(kafka_settings(), partner, wait)):
        typer.echo(json.dumps(rejection, ensure_ascii=False))


@app.command()
def demo(
    var: Path = typer.Option(Path("var"), help="Where `techport run` wrote run/endpoints.json."),
    students: int = typer.Option(300, min=1, help="How many students to register."),
    operator_key: str | None = typer.Option(None, help="Default: TECHPORT_OPERATOR_KEY."),
    seed: int = typer.Option(2027, help="Same seed, same network."),
) -> None:
    """Fill the running platform with a realistic IJmond network and show the matches."""
    from techport_cli.demo import run_demo

    run_demo(var, students, operator_key, seed)


@topics_app.command("create")
def topics_create() -> None:
    """Create every topic of the catalog with its partition count (existing ones are left alone)."""
    created = asyncio.run(ensure_topics(kafka_settings()))
    typer.echo(f"created: {', '.join(created) if created else 'nothing (all exist)'}")


if __name__ == "__main__":
    app()
