"""`techport run`: the whole platform on embedded defaults, on loopback, until Ctrl-C.

Kafka (KAFKA_BOOTSTRAP_SERVERS, else a local broker with its data under var/kafka), the topic catalog,
the SMTP sink (mail under var/mail, or SMTP_HOST/SMTP_PORT), then every service as its own process
with a SQLite file under var/ (or <SERVICE>_DATABASE_URL).
Writes var/run/endpoints.json when everything answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from techport_dev.__main__ import wait_for_interrupt
from techport_dev.kafka import LocalKafkaCluster, free_port
from techport_dev.smtp import SmtpSink
from techport_shared.kafka import ensure_topics
from techport_shared.settings import KafkaSettings

console = Console()


@dataclass(frozen=True)
class ServiceSpec:
    name: str

    @property
    def module(self) -> str:
        """The service's package; `python -m <module> serve` runs it, as its container does."""
        return f"techport_{self.name}"

    def exists(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


SERVICES = (
    ServiceSpec("members"),
    ServiceSpec("matching"),
    ServiceSpec("notifications"),
    ServiceSpec("gateway"),
)


@dataclass
class Running:
    spec: ServiceSpec
    url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def kafka(var: Path) -> Iterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    cluster = LocalKafkaCluster(brokers=1, data_dir=var / "kafka")
    started = time.perf_counter()
    with console.status("Starting Kafka (the first start fetches its jars with Maven)..."):
        bootstrap = cluster.start()
    console.print(f"Kafka ready at {bootstrap} in {time.perf_counter() - started:.1f}s")
    console.print(
        "[yellow]Kafka listens in plaintext on loopback, without credentials or ACLs (development only).[/] "
        "Partners' SASL/SCRAM credentials and ACLs: `techport infra kafka --secure`, and the operator guide."
    )
    try:
        yield bootstrap
    finally:
        cluster.stop()


@contextlib.contextmanager
def smtp(var: Path) -> Iterator[tuple[str, int, Path | None]]:
    if os.environ.get("SMTP_HOST"):
        yield os.environ["SMTP_HOST"], int(os.environ.get("SMTP_PORT", "25")), None
        return
    mail_dir = (var / "mail").resolve()
    with SmtpSink(mail_dir) as sink:
        yield sink.host, sink.port, mail_dir


def service_environment(
    spec: ServiceSpec, var: Path, bootstrap: str, smtp_host: str, smtp_port: int
) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault(f"{spec.name.upper()}_DATABASE_URL", f"sqlite:///{(var / f'{spec.name}.db').resolve()}")
    env["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env["SMTP_HOST"], env["SMTP_PORT"] = smtp_host, str(smtp_port)
    return env


def start_service(spec: ServiceSpec, port: int, env: dict[str, str], var: Path) -> Running:
    log = (var / "log" / f"{spec.name}.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", spec.module, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Running(spec, f"http://127.0.0.1:{port}", process)


def wait_healthy(service: Running, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.spec.name} exited; see var/log/{service.spec.name}.log")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{service.url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{service.spec.name} not ready in {timeout_s}s; see var/log/{service.spec.name}.log")


def stop_service(service: Running) -> None:
    if service.process.poll() is None:
        os.killpg(service.process.pid, signal.SIGTERM)
        try:
            service.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(service.process.pid, signal.SIGKILL)


def dev_secret(var: Path, name: str) -> str:
    """A development secret that persists under var/secrets/ (readable by its owner only)."""
    path = var / "secrets" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def run_platform(var: Path) -> None:
    var.mkdir(parents=True, exist_ok=True)
    (var / "log").mkdir(exist_ok=True)
    (var / "run").mkdir(exist_ok=True)
    endpoints_file = var / "run" / "endpoints.json"
    endpoints_file.unlink(missing_ok=True)
    operator_key = os.environ.get("TECHPORT_OPERATOR_KEY") or f"op_{secrets.token_urlsafe(24)}"
    os.environ["TECHPORT_OPERATOR_KEY"] = operator_key
    # The secret the gateway signs callers' identities with, and every service verifies; it also signs
    # unsubscribe links and keys match references. Made once and kept under var/, so links in emails sent
    # by an earlier run keep working.
    os.environ.setdefault("TECHPORT_IDENTITY_SECRET", dev_secret(var, "identity"))
    running: list[Running] = []
    with kafka(var) as bootstrap, smtp(var) as (smtp_host, smtp_port, mail_dir):
        asyncio.run(ensure_topics(KafkaSettings(kafka_bootstrap_servers=bootstrap)))
        gateway_port = int(os.environ.get("TECHPORT_GATEWAY_PORT", "8000"))
        try:
            for spec in (s for s in SERVICES if s.exists()):
                port = gateway_port if spec.name == "gateway" else free_port()
                env = service_environment(spec, var, bootstrap, smtp_host, smtp_port)
                env.update({f"{s.spec.name.upper()}_URL": s.url for s in running})
                # Unsubscribe links in emails point at the public API: the gateway; so do the portal links.
                env.setdefault("TECHPORT_PUBLIC_URL", f"http://127.0.0.1:{gateway_port}/api/v1")
                env.setdefault("TECHPORT_PORTAL_URL", f"http://127.0.0.1:{gateway_port}/portal")
                service = start_service(spec, port, env, var)
                running.append(service)
                with console.status(f"Starting {spec.name}..."):
                    wait_healthy(service)
                console.print(f"{spec.name} ready at {service.url}")
            gateway = next((s.url for s in running if s.spec.name == "gateway"), None)
            endpoints = {
                "gateway": gateway,
                "kafka": bootstrap,
                "smtp": f"{smtp_host}:{smtp_port}",
                "mail_dir": str(mail_dir) if mail_dir else None,
                "services": {s.spec.name: s.url for s in running if s.spec.name != "gateway"},
            }
            endpoints_file.write_text(json.dumps(endpoints, indent=2))
            console.print_json(data=endpoints)
            if gateway:
                console.print(f"Gateway: [bold]{gateway}[/]  operator key: [bold]{operator_key}[/]")
            console.print(f"Endpoints written to {endpoints_file}. Ctrl-C stops everything.")
            wait_for_interrupt(lambda: _all_running(running))
        finally:
            for service in reversed(running):
                stop_service(service)
            endpoints_file.unlink(missing_ok=True)


def _all_running(running: list[Running]) -> bool:
    for service in running:
        if service.process.poll() is not None:
            console.print(f"[red]{service.spec.name} exited; see var/log/{service.spec.name}.log[/]")
            return False
    return True
