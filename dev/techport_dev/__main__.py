"""`python -m techport_dev` (also `techport infra`): start local infrastructure by hand."""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from techport_shared.access import SERVICE_GRANTS
from techport_shared.kafka import ensure_topics
from techport_shared.settings import KafkaSettings
from techport_shared.topics import partner_topics

from techport_dev.access import grant_services, onboard_partner_access
from techport_dev.kafka import LocalKafkaCluster, ensure_jars, kafka_endpoint
from techport_dev.postgres import LocalPostgres
from techport_dev.smtp import SmtpSink

app = typer.Typer(
    help="Local infrastructure: a real Kafka, PostgreSQL and an SMTP sink.", no_args_is_help=True
)
console = Console()


def wait_for_interrupt(healthy: Callable[[], bool] = lambda: True) -> None:
    """Block until Ctrl-C or SIGTERM, or until `healthy` says something we run has gone."""
    stop = {"now": False}

    def _handler(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    while not stop["now"] and healthy():
        time.sleep(0.3)


@app.command()
def jars() -> None:
    """Fetch (once) and cache the Kafka broker jars from Maven Central."""
    started = time.perf_counter()
    path = ensure_jars()
    console.print(f"Kafka jars in {path} ({time.perf_counter() - started:.1f}s)")


@app.command()
def kafka(
    brokers: int = typer.Option(1, help="Nodes in the KRaft cluster."),
    data_dir: Path | None = typer.Option(
        None, help="Keep the broker's data here (default: a temporary folder)."
    ),
    create_topics: bool = typer.Option(True, help="Create the topic catalog."),
    secure: bool = typer.Option(
        False,
        help="A SASL/SCRAM listener and ACLs, with a user per service (passwords printed once); partners "
        "are onboarded with `techport infra partner-access`.",
    ),
) -> None:
    """Run Kafka until Ctrl-C (KAFKA_BOOTSTRAP_SERVERS, else Docker, else a local broker)."""
    started = time.perf_counter()
    if secure:
        passwords = {name: secrets.token_urlsafe(18) for name in SERVICE_GRANTS}
        cluster = LocalKafkaCluster(brokers=brokers, data_dir=data_dir, acls=True)
        bootstrap = cluster.start()
        grant_services(cluster, passwords)
        console.print(f"SASL/SCRAM-SHA-512 listener: [bold]{cluster.sasl_bootstrap_servers}[/]")
        for name, password in passwords.items():
            console.print(f"  {name}: KAFKA_SASL_USERNAME={name} KAFKA_SASL_PASSWORD={password}")
        _serve_kafka(bootstrap, started, create_topics)
        cluster.stop()
        return
    if data_dir is not None:
        cluster = LocalKafkaCluster(brokers=brokers, data_dir=data_dir)
        bootstrap = cluster.start()
        _serve_kafka(bootstrap, started, create_topics)
        cluster.stop()
        return
    with kafka_endpoint(brokers) as (bootstrap, _cluster):
        _serve_kafka(bootstrap, started, create_topics)


def _serve_kafka(bootstrap: str, started: float, create_topics: bool) -> None:
    console.print(f"Kafka ready at [bold]{bootstrap}[/] in {time.perf_counter() - started:.1f}s")
    if create_topics:
        asyncio.run(ensure_topics(KafkaSettings(kafka_bootstrap_servers=bootstrap)))
    wait_for_interrupt()


@app.command("partner-access")
def partner_access(
    organisation_id: str = typer.Argument(..., help="The partner's organisation id (registered first)."),
    bootstrap: str = typer.Option(..., help="The cluster's operator (super user) listener."),
) -> None:
    """Onboard a partner on a local secure cluster: a SCRAM user that may write only its own ingress topic
    and read only its own rejected topic. The password is printed once."""
    user, password = onboard_partner_access(bootstrap, organisation_id)
    topics = partner_topics(organisation_id)
    console.print(f"user [bold]{user}[/] password [bold]{password}[/] (shown once)")
    console.print(f"writes {topics.ingress}; reads {topics.rejected}")


@app.command()
def postgres() -> None:
    """Run a throwaway PostgreSQL until Ctrl-C."""
    with LocalPostgres() as server:
        console.print(f"PostgreSQL ready at [bold]{server.url('postgres')}[/]")
        wait_for_interrupt()


@app.command()
def smtp(
    mail_dir: Path = typer.Option(Path("var/mail"), help="Captured mail goes here, one .eml per message."),
    port: int = typer.Option(0, help="0 picks a free port."),
) -> None:
    """Run the capturing SMTP sink until Ctrl-C."""
    with SmtpSink(mail_dir, port=port or None) as sink:
        console.print(f"SMTP sink at [bold]{sink.host}:{sink.port}[/], mail in {mail_dir.resolve()}")
        wait_for_interrupt()


if __name__ == "__main__":
    app()
