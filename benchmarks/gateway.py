"""Gateway benchmark: requests per second and p99 latency of one GET through the gateway and straight to the
service (with the identity token the gateway would add), same machine, same run, printed as ratios.

Services run as they do in production (`python -m techport_<service> serve`: uvloop, httptools, the start-up
heap frozen out of the garbage collector); the load comes from this process (aiohttp, fixed concurrency)."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx
from techport_dev.kafka import free_port, kafka_endpoint
from techport_shared.identity import IDENTITY_HEADER, OPERATOR, issue_token
from techport_shared.kafka import ensure_topics
from techport_shared.settings import KafkaSettings

from benchmarks.processes import SECRET, serve, service_env, wait_ready

OPERATOR_KEY = "op_bench_0123456789abcdef0123456789"


async def _load(
    url: str, headers: dict[str, str], seconds: float, concurrency: int
) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 in ms, from `concurrency` keep-alive connections. The load comes from
    aiohttp, the cheapest client we have: on two cores every millisecond the client spends is one the
    services do not get, and the comparison is of the gateway, not of the client."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with client.get(url) as response:
                    body = await response.read()
                latencies.append(time.perf_counter() - started)
                assert response.status == 200, body[:500]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    return len(latencies) / elapsed, statistics.median(latencies) * 1000, p99


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks gateway")
    parser.add_argument("--seconds", type=float, default=4.0, help="of each measurement")
    parser.add_argument("--rounds", type=int, default=5, help="direct and through the gateway, alternated")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    with kafka_endpoint() as (bootstrap, _), tempfile.TemporaryDirectory() as work:
        # The topic catalog, as on any platform: members reads its topics from the start.
        asyncio.run(ensure_topics(KafkaSettings(kafka_bootstrap_servers=bootstrap)))
        members_port, gateway_port = free_port(), free_port()
        env = service_env(
            bootstrap,
            TECHPORT_OPERATOR_KEY=OPERATOR_KEY,
            MEMBERS_DATABASE_URL=f"sqlite:///{work}/members.db",
            GATEWAY_DATABASE_URL=f"sqlite:///{work}/gateway.db",
            GATEWAY_RATE_LIMIT="100000/second",
            MEMBERS_URL=f"http://127.0.0.1:{members_port}",
        )
        processes = [serve("members", members_port, env, Path(work) / "members.log")]
        try:
            wait_ready(f"http://127.0.0.1:{members_port}/readyz")
            processes.append(serve("gateway", gateway_port, env, Path(work) / "gateway.log"))
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
            direct_url = f"http://127.0.0.1:{members_port}/organisations/bench-school"
            gateway_headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
            # Alternated rounds, so that drift of the machine (other tenants, frequency) falls on both alike;
            # one warm-up of each first.
            asyncio.run(_load(direct_url, direct_headers, 1.0, args.concurrency))
            asyncio.run(
                _load(f"{gateway}/organisations/bench-school", gateway_headers, 1.0, args.concurrency)
            )
            rounds = []
            for _ in range(args.rounds):
                direct = asyncio.run(_load(direct_url, direct_headers, args.seconds, args.concurrency))
                through = asyncio.run(
                    _load(
                        f"{gateway}/organisations/bench-school",
                        gateway_headers,
                        args.seconds,
                        args.concurrency,
                    )
                )
                rounds.append((direct, through))
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=15)
    print(
        f"gateway benchmark: GET /organisations/{{id}}, {args.concurrency} concurrent, "
        f"{args.rounds} rounds of {args.seconds:.0f}s each way"
    )
    for n, (direct, through) in enumerate(rounds, 1):
        print(
            f"  round {n}: direct {direct[0]:6.0f} req/s p50 {direct[1]:5.1f} p99 {direct[2]:5.1f} ms | "
            f"gateway {through[0]:6.0f} req/s p50 {through[1]:5.1f} p99 {through[2]:5.1f} ms | "
            f"ratio {through[0] / direct[0]:.2f}x, p99 {through[2] / direct[2]:.2f}x"
        )
    ratios = sorted(t[0] / d[0] for d, t in rounds)
    p99s = sorted(t[2] / d[2] for d, t in rounds)
    direct_rate = statistics.median(d[0] for d, _ in rounds)
    through_rate = statistics.median(t[0] for _, t in rounds)
    print(f"  straight to members: median {direct_rate:6.0f} req/s")
    print(f"  through the gateway: median {through_rate:6.0f} req/s")
    print(
        f"  ratio gateway/direct: throughput {statistics.median(ratios):.2f}x "
        f"(rounds {ratios[0]:.2f}-{ratios[-1]:.2f}), "
        f"p99 {statistics.median(p99s):.2f}x (rounds {p99s[0]:.2f}-{p99s[-1]:.2f})"
    )
