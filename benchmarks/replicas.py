"""Matching that scales out: a burst of students matched by one replica and by two (a fresh PostgreSQL
database and consumer group each time), on the same broker in the same run; events per second and the ratio.
Rounds alternate which goes first (one run of each is a coin toss on a shared two-core machine: single runs
gave ratios from 1.48x to 2.06x); the median ratio is the figure. Prints figures; asserts nothing.
`python -m benchmarks replicas [--students 4000] [--rounds 3]`."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from techport_dev.kafka import free_port, kafka_endpoint
from techport_dev.postgres import LocalPostgres
from techport_shared.envelope import Envelope, to_binary
from techport_shared.events import ce_type
from techport_shared.kafka import ensure_topics
from techport_shared.settings import KafkaSettings
from techport_shared.skills import vocabulary
from techport_shared.topics import STUDENTS, VACANCIES

from benchmarks.pipeline import POSTCODES, MatchWatcher
from benchmarks.processes import metric_total, send, serve, service_env, wait_ready


def _records(tag: str, students: int, vacancies: int) -> tuple[list[Any], list[Any], list[str]]:
    skills = [s.code for s in sorted(vocabulary().skills.values(), key=lambda s: s.code)]
    pairs = [[skills[2 * j], skills[2 * j + 1]] for j in range(vacancies)]
    posted = [
        to_binary(
            Envelope(
                type=ce_type("vacancy.posted"),
                source="/members",
                subject=f"rv-{tag}-{j}",
                data={
                    "vacancy_id": f"rv-{tag}-{j}",
                    "organisation_id": "bench-company",
                    "title": f"BBL {j}",
                    "kind": "apprenticeship",
                    "required_skills": pairs[j],
                    "postcode": POSTCODES[j % 5],
                    "location": {"lat": 52.46, "lon": 4.62},
                    "positions": 1000,
                    "starts_on": "2027-03-01",
                    "contact_email": "hr@example.nl",
                },
            )
        )
        for j in range(vacancies)
    ]
    ids = [f"rs-{tag}-{i}" for i in range(students)]
    registered = [
        to_binary(
            Envelope(
                type=ce_type("student.registered"),
                source="/members",
                subject=student_id,
                data={
                    "student_id": student_id,
                    "school_id": None,
                    "given_name": "S",
                    "family_name": "B",
                    "email": f"{student_id}@student.example.nl",
                    "level": "mbo-4",
                    "programme": "Techniek",
                    "skills": pairs[i % vacancies],
                    "seeking": ["apprenticeship"],
                    "postcode": POSTCODES[i % 5],
                    "location": {"lat": 52.46, "lon": 4.62},
                    "max_distance_km": 40,
                    "consent": {"matching": True, "email": False},
                },
            )
        )
        for i, student_id in enumerate(ids)
    ]
    return posted, registered, ids


def _batched(port: int) -> tuple[float, float]:
    """(batches, records) the replica on `port` handled from the students topic."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    name = "techport_consumer_batch_records"
    topic = STUDENTS.name
    return metric_total(text, f"{name}_count", topic=topic), metric_total(text, f"{name}_sum", topic=topic)


async def _run(bootstrap: str, url: str, replicas: int, students: int, work: Path) -> tuple[float, float]:
    tag = uuid.uuid4().hex[:6]
    env = service_env(
        bootstrap,
        MATCHING_DATABASE_URL=url,
        MATCHING_CONSUMER_GROUP=f"bench-matching-{tag}",
        CONSUMER_AUTO_OFFSET_RESET="latest",
        MATCH_TOP_K_PER_VACANCY="100000",
    )
    processes: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for n in range(replicas):
            port = free_port()
            ports.append(port)
            processes.append(serve("matching", port, env, work / f"matching-{tag}-{n}.log"))
            await asyncio.to_thread(wait_ready, f"http://127.0.0.1:{port}/readyz")
        await asyncio.sleep(8)  # the group is formed and its members hold their partitions
        posted, registered, ids = _records(tag, students, 100)
        watcher = MatchWatcher(bootstrap)
        await watcher.start()
        try:
            await send(bootstrap, VACANCIES.name, posted)
            await asyncio.sleep(3)
            started = time.perf_counter()
            await send(bootstrap, STUDENTS.name, registered)
            await watcher.wait_for(ids, 600)
            rate = students / (max(watcher.arrived[i] for i in ids) - started)
            counted = [await asyncio.to_thread(_batched, port) for port in ports]
            return rate, sum(r for _, r in counted) / max(sum(b for b, _ in counted), 1)
        finally:
            await watcher.stop()
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks replicas")
    parser.add_argument("--students", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    rounds: list[dict[int, float]] = []
    batch_sizes: list[dict[int, float]] = []  # the mean records per consumer batch
    with (
        kafka_endpoint() as (bootstrap, _),
        LocalPostgres() as postgres,
        tempfile.TemporaryDirectory() as work,
    ):
        asyncio.run(ensure_topics(KafkaSettings(kafka_bootstrap_servers=bootstrap)))
        for n in range(args.rounds):
            rates, sizes = {}, {}
            for replicas in (1, 2) if n % 2 == 0 else (2, 1):
                url = postgres.create_database(f"bench_matching_{replicas}_{uuid.uuid4().hex[:6]}")
                run = _run(bootstrap, url, replicas, args.students, Path(work))
                rates[replicas], sizes[replicas] = asyncio.run(run)
            rounds.append(rates)
            batch_sizes.append(sizes)
    print(
        f"matching replicas benchmark: a burst of {args.students} students against 100 vacancies, PostgreSQL"
    )
    for n, (rates, sizes) in enumerate(zip(rounds, batch_sizes, strict=True), 1):
        print(
            f"  round {n}: 1 replica {rates[1]:6.0f} students/s (batches of {sizes[1]:3.0f}) | 2 replicas"
            f" {rates[2]:6.0f} students/s (batches of {sizes[2]:3.0f}) | ratio {rates[2] / rates[1]:.2f}x"
        )
    ratios = [rates[2] / rates[1] for rates in rounds]
    print(f"  1 replica:  median {statistics.median(r[1] for r in rounds):6.0f} students/s")
    print(f"  2 replicas: median {statistics.median(r[2] for r in rounds):6.0f} students/s")
    spread = f"rounds {min(ratios):.2f}-{max(ratios):.2f}"
    print(f"  ratio two/one: median {statistics.median(ratios):.2f}x ({spread})")


if __name__ == "__main__":
    main(sys.argv[1:])
