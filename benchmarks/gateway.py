"""Gateway benchmark: requests per second and p99 latency of one GET through the gateway and straight to the
service (with the identity token the gateway would add), same machine, same run, printed as ratios.

Services run as their own uvicorn processes; the load comes from this process (httpx, fixed concurrency)."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from techport_dev.kafka import free_port, kafka_endpoint
from techport_shared.identity import IDENTITY_HEADER, OPERATOR, issue_token

from benchmarks.processes import spawn, wait_ready

SECRET = "bench-identity-secret-0123456789abcdef"
OPERATOR_KEY = "op_bench_0123456789abcdef0123456789"


def _serve(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    args = [
        "-m",
        "uvicorn",
        "--factory",
        app,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return spawn(args, env, log)


async def _load(
    url: str, headers: dict[str, str], seconds: float, concurrency: int
) -> tuple[float, float, float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(headers=headers, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.get(url)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    return len(latencies) / elapsed, statistics.median(latencies) * 1000, p99


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks gateway")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    with kafka_endpoint() as (bootstrap, _), tempfile.TemporaryDirectory() as work:
        members_port, gateway_port = free_port(), free_port()
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            TECHPORT_IDENTITY_SECRET=SECRET,
            TECHPORT_OPERATOR_KEY=OPERATOR_KEY,
            MEMBERS_DATABASE_URL=f"sqlite:///{work}/members.db",
            GATEWAY_DATABASE_URL=f"sqlite:///{work}/gateway.db",
            GATEWAY_RATE_LIMIT="100000/second",
            MEMBERS_URL=f"http://127.0.0.1:{members_port}",
        )
        processes = [
            _serve("techport_members.main:create_app", members_port, env, Path(work) / "members.log")
        ]
        try:
            wait_ready(f"http://127.0.0.1:{members_port}/readyz")
            processes.append(
                _serve("techport_gateway.main:create_app", gateway_port, env, Path(work) / "gateway.log")
            )
            wait_ready(f"http://127.0.0.1:{gateway_port}/healthz")
            organisation = {
                "organisation_id": "bench-school",
                "kind": "school",
                "name": "Bench",
                "email": "b@b.nl",
                "postcode": "1971 AB",
                "city": "IJmuiden",
            }
            gateway = f"http://127.0.0.1:{gateway_port}/api/v1"
            httpx.post(
                f"{gateway}/organisations",
                json=organisation,
                headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
            ).raise_for_status()
            direct_headers = {IDENTITY_HEADER: issue_token(OPERATOR, SECRET, ttl_s=3600)}
            direct = asyncio.run(
                _load(
                    f"http://127.0.0.1:{members_port}/organisations/bench-school",
                    direct_headers,
                    args.seconds,
                    args.concurrency,
                )
            )
            through = asyncio.run(
                _load(
                    f"{gateway}/organisations/bench-school",
                    {"Authorization": f"Bearer {OPERATOR_KEY}"},
                    args.seconds,
                    args.concurrency,
                )
            )
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=15)
    print(
        f"gateway benchmark: GET /organisations/{{id}}, {args.concurrency} concurrent, "
        f"{args.seconds:.0f}s each"
    )
    print(f"  straight to members: {direct[0]:8.0f} req/s  p50 {direct[1]:6.2f} ms  p99 {direct[2]:6.2f} ms")
    print(
        f"  through the gateway: {through[0]:8.0f} req/s  p50 {through[1]:6.2f} ms  p99 {through[2]:6.2f} ms"
    )
    print(
        f"  ratio gateway/direct: throughput {through[0] / direct[0]:.2f}x, p99 {through[2] / direct[2]:.2f}x"
    )
