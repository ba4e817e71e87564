"""Pipeline benchmark: partner events through members and matching to `match.found` (and on to notifications'
digests), on the local broker, against a raw aiokafka loop on the same broker in the same run.

- raw loop: getmany, parse, produce, commit per batch; events per second over a burst.
- pipeline burst: a school's student system sends N students at once to its ingress topic; events per second
  from the first send to the last student's `match.found`.
- steady rate: once every service has caught up with the burst, students at 200/s; p50 and p99 from publish
  to `match.found`, and where that time goes (members, matching, reading it back).
- CPU: each service's and the broker's CPU seconds over the burst and over the steady rate, and the machine's,
  against what it has to give (cores times seconds): on a machine whose cores are all busy, latency is mostly
  waiting for a core. The raw loop's and the burst's machine CPU per event set side by side.
It prints figures and ratios and asserts nothing. `python -m benchmarks pipeline [--students 3000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from techport_dev.kafka import free_port, kafka_endpoint
from techport_dev.smtp import SmtpSink
from techport_shared.envelope import Envelope, to_binary
from techport_shared.events import ce_type
from techport_shared.identity import IDENTITY_HEADER, OPERATOR, issue_token
from techport_shared.kafka import ensure_topics
from techport_shared.settings import KafkaSettings
from techport_shared.topics import MATCHES, STUDENTS, TopicSpec, partner_topics

from benchmarks.processes import SECRET, metric_total, produce, serve, service_env, wait_ready

SCHOOL, COMPANY = "bench-college", "bench-company"
POSTCODES = ("1972 AB", "1951 AA", "1971 BX", "1991 AB", "1941 AA")


def _student(i: int, tag: str, skills: list[str]) -> dict[str, Any]:
    return {
        "student_id": f"bs-{tag}-{i}",
        "school_id": SCHOOL,
        "given_name": f"Student{i}",
        "family_name": "Benchmark",
        "email": f"s{i}-{tag}@student.example.nl",
        "level": "mbo-4",
        "programme": "Monteur mechatronica",
        "skills": skills,
        "seeking": ["apprenticeship"],
        "postcode": POSTCODES[i % len(POSTCODES)],
        "max_distance_km": 40,
        "consent": {"matching": True, "email": True},
    }


def _event(data: dict[str, Any]) -> Any:
    return to_binary(
        Envelope(
            type=ce_type("student.registered"),
            source=f"/partners/{SCHOOL}",
            subject=data["student_id"],
            data=data,
        )
    )


async def _raw_loop(bootstrap: str, records: list[Any]) -> tuple[float, float]:
    """Events per second of the plainest consumer we could write (getmany, parse, produce, commit), and the
    machine's CPU seconds (this loop's and the broker's) over them."""
    settings = KafkaSettings(kafka_bootstrap_servers=bootstrap)
    source, sink = f"bench.raw.in.{uuid.uuid4().hex[:6]}", f"bench.raw.out.{uuid.uuid4().hex[:6]}"
    await ensure_topics(settings, (TopicSpec(source, "bench", "id", ()), TopicSpec(sink, "bench", "id", ())))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await produce(producer, source, records)
        consumer = AIOKafkaConsumer(
            source,
            bootstrap_servers=bootstrap,
            group_id=f"raw-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        done, started, cpu_before = 0, None, 0.0
        try:
            while done < len(records):
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                if started is None and batches:
                    started, cpu_before = time.perf_counter(), cpu_seconds({})["all"]
                sends = []
                for tp_records in batches.values():
                    for record in tp_records:
                        data = json.loads(record.value)
                        sends.append(await producer.send(sink, json.dumps(data).encode(), key=record.key))
                        done += 1
                await asyncio.gather(*sends)
                if batches:
                    await consumer.commit()
            elapsed, cpu = time.perf_counter() - (started or 0.0), cpu_seconds({})["all"] - cpu_before
            return done / elapsed, cpu
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


class MatchWatcher:
    """Reads the students and matches topics from their ends: when each student's first `match.found` arrived,
    and (from the records' timestamps, stamped by the producing relay) when members published the student and
    matching its match: where the time from publish to match goes."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.arrived: dict[str, float] = {}
        self.stamps: dict[str, dict[str, float]] = {}  # student id -> stage -> epoch seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            MATCHES.name,
            STUDENTS.name,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="latest",
        )
        await self.consumer.start()
        await self.consumer.seek_to_end()
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        found = ce_type("match.found").encode()
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=1000)
            now, wall = time.perf_counter(), time.time()
            for records in batches.values():
                for record in records:
                    key = record.key.decode()
                    stamps = self.stamps.setdefault(key, {})
                    if record.topic == STUDENTS.name:
                        stamps.setdefault("members", record.timestamp / 1000)
                    elif dict(record.headers).get("ce_type") == found:
                        self.arrived.setdefault(key, now)
                        stamps.setdefault("matching", record.timestamp / 1000)
                        stamps.setdefault("read", wall)

    def stages(self, sent: dict[str, float]) -> dict[str, tuple[float, float]]:
        """p50 and p99 in ms of each stage, for students sent at `sent` (epoch seconds)."""
        spans: dict[str, list[float]] = {"members": [], "matching": [], "read": []}
        for student_id, at in sent.items():
            stamps = self.stamps.get(student_id, {})
            if len(stamps) == 3:
                spans["members"].append(stamps["members"] - at)
                spans["matching"].append(stamps["matching"] - stamps["members"])
                spans["read"].append(stamps["read"] - stamps["matching"])
        return {name: _percentiles([v * 1000 for v in values]) for name, values in spans.items() if values}

    async def wait_for(self, ids: list[str], timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        while not all(i in self.arrived for i in ids):
            if time.perf_counter() > deadline:
                missing = sum(i not in self.arrived for i in ids)
                raise TimeoutError(f"{missing} of {len(ids)} students without a match in {timeout_s}s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.consumer.stop()


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user and system) each process has used so far, and the machine's ("all", the broker's and
    this benchmark's too: over the burst, sending it and reading the matches back). From Linux's /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / tick
    cpu = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    used["all"] = (sum(map(int, cpu)) - int(cpu[3]) - int(cpu[4])) / tick  # less idle and iowait
    return used


def cpu_since(pids: dict[str, int], before: dict[str, float], started: float) -> dict[str, float]:
    """The CPU seconds used since `before` was read (`cpu_seconds`), and the wall time since `started`."""
    used = {name: seconds - before[name] for name, seconds in cpu_seconds(pids).items()}
    return used | {"wall": time.perf_counter() - started}


def _percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[int(0.99 * (len(values) - 1))]


async def _settled(services: list[str], timeout_s: float = 600) -> float:
    """Wait until every service has consumed everything and published its outbox, and notifications has sent
    what is due (it takes longer over a burst than matching): a steady rate is measured on a platform that is
    not still catching up.
    Returns the seconds waited. The lag gauges are sampled every 5 s, so two samples of zero in a row."""
    started = time.perf_counter()
    zero = 0
    async with httpx.AsyncClient(timeout=10) as client:
        while zero < 2:
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError("the platform did not settle after the burst")
            await asyncio.sleep(5)
            waiting = 0.0
            for url in services:
                text = (await client.get(f"{url}/metrics")).text
                waiting += metric_total(text, "techport_consumer_lag")
                waiting += metric_total(text, "techport_outbox_backlog")
                waiting += metric_total(text, "techport_notifications_due")
            zero = zero + 1 if waiting == 0 else 0
    return time.perf_counter() - started


async def _pipeline(
    bootstrap: str,
    vacancies: list[list[str]],
    students: int,
    rate: float,
    seconds: float,
    services: list[str],
    pids: dict[str, int],
) -> dict[str, Any]:
    ingress = partner_topics(SCHOOL).ingress
    watcher = MatchWatcher(bootstrap)
    await watcher.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        # A warm-up, so that the groups have joined and the topic is read.
        warm = [_student(i, "warm", vacancies[i % len(vacancies)]) for i in range(20)]
        await produce(producer, ingress, [_event(data) for data in warm])
        await watcher.wait_for([d["student_id"] for d in warm], 120)
        # The burst.
        tag = uuid.uuid4().hex[:6]
        burst = [_student(i, tag, vacancies[i % len(vacancies)]) for i in range(students)]
        records = [_event(d) for d in burst]
        started, cpu_before = time.perf_counter(), cpu_seconds(pids)
        await produce(producer, ingress, records)
        await watcher.wait_for([d["student_id"] for d in burst], 600)
        burst_cpu = cpu_since(pids, cpu_before, started)
        burst_rate = students / (max(watcher.arrived[d["student_id"]] for d in burst) - started)
        settled = await _settled(services)
        # The steady rate.
        tag = uuid.uuid4().hex[:6]
        steady = [_student(i, tag, vacancies[i % len(vacancies)]) for i in range(int(rate * seconds))]
        # Made before the clock starts: the benchmark's own work takes cores from the services it measures.
        steady_records = [(data["student_id"], _event(data)) for data in steady]
        sent: dict[str, float] = {}
        sent_at: dict[str, float] = {}  # epoch seconds, to set against the records' timestamps
        begin, cpu_before = time.perf_counter(), cpu_seconds(pids)
        for n, (student_id, record) in enumerate(steady_records):
            await asyncio.sleep(max(0.0, begin + n / rate - time.perf_counter()))
            sent[student_id], sent_at[student_id] = time.perf_counter(), time.time()
            await producer.send(ingress, record.value, key=record.key, headers=record.header_list())
        await watcher.wait_for(list(sent), 300)
        steady_cpu = cpu_since(pids, cpu_before, begin)
        p50, p99 = _percentiles([(watcher.arrived[i] - t) * 1000 for i, t in sent.items()])
        return {
            "burst_rate": burst_rate,
            "burst_cpu": burst_cpu,
            "steady_cpu": steady_cpu,
            "p50": p50,
            "p99": p99,
            "stages": watcher.stages(sent_at),
            "steady": len(steady),
            "settled": settled,
        }
    finally:
        await producer.stop()
        await watcher.stop()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pipeline")
    parser.add_argument("--students", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    with (
        kafka_endpoint() as (bootstrap, cluster),
        tempfile.TemporaryDirectory() as work,
        SmtpSink(Path(work) / "mail") as sink,
    ):
        asyncio.run(ensure_topics(KafkaSettings(kafka_bootstrap_servers=bootstrap)))
        ports = {name: free_port() for name in ("members", "matching", "notifications")}
        env = service_env(
            bootstrap,
            MEMBERS_URL=f"http://127.0.0.1:{ports['members']}",
            SMTP_HOST=sink.host,
            SMTP_PORT=str(sink.port),
            NOTIFY_DIGEST_SECONDS="2",
            # Every student matches one vacancy: no vacancy may fill up before the burst is through.
            MATCH_TOP_K_PER_VACANCY="100000",
            **{f"{n.upper()}_DATABASE_URL": f"sqlite:///{work}/{n}.db" for n in ports},
        )
        processes = []
        try:
            for name, port in ports.items():
                processes.append(serve(name, port, env, Path(work) / f"{name}.log"))
                wait_ready(f"http://127.0.0.1:{port}/readyz")
            members = f"http://127.0.0.1:{ports['members']}"
            headers = {IDENTITY_HEADER: issue_token(OPERATOR, SECRET, ttl_s=3600)}
            skills = [s.code for s in sorted(_vocabulary().skills.values(), key=lambda s: s.code)][:40]
            vacancies = [[skills[2 * j], skills[2 * j + 1]] for j in range(20)]
            for org, kind in ((SCHOOL, "school"), (COMPANY, "company")):
                body: dict[str, Any] = {
                    "organisation_id": org,
                    "kind": kind,
                    "name": org,
                    "email": f"info@{org}.example.nl",
                    "postcode": "1971 AB",
                    "city": "IJmuiden",
                }
                _post(f"{members}/organisations", body, headers)
            for j, required in enumerate(vacancies):
                vacancy: dict[str, Any] = {
                    "vacancy_id": f"bv-{j}",
                    "organisation_id": COMPANY,
                    "title": f"BBL {j}",
                    "kind": "apprenticeship",
                    "required_skills": required,
                    "postcode": POSTCODES[j % 5],
                    "positions": 1000,
                    "starts_on": "2027-03-01",
                    "contact_email": f"hr{j}@{COMPANY}.example.nl",
                }
                _post(f"{members}/vacancies", vacancy, headers)
            records = [_event(_student(i, "raw", vacancies[i % 20])) for i in range(args.students)]
            raw, raw_cpu = asyncio.run(_raw_loop(bootstrap, records))
            services = [f"http://127.0.0.1:{port}" for port in ports.values()]
            pids = {name: process.pid for name, process in zip(ports, processes, strict=True)}
            if cluster is not None and cluster.nodes[0].process is not None:
                pids["kafka"] = cluster.nodes[0].process.pid
            pids["benchmark"] = os.getpid()  # its producer and reader, and the SMTP sink
            run = _pipeline(bootstrap, vacancies, args.students, args.rate, args.seconds, services, pids)
            result = asyncio.run(run)
            time.sleep(3)
            mails = sink.received
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)
    rate = f"{args.rate:.0f}/s"
    print(f"pipeline benchmark: {args.students} students in a burst, then {result['steady']} at {rate}")
    print(f"  raw aiokafka loop (getmany, parse, produce, commit): {raw:8.0f} events/s")
    print(f"  partner ingress -> members -> matching -> match.found: {result['burst_rate']:8.0f} events/s")
    print(f"  ratio pipeline/raw loop: {result['burst_rate'] / raw:.2f}x")
    burst_cpu = result["burst_cpu"]["all"]
    _print_cpu("the burst", result["burst_cpu"])
    print(
        f"  machine CPU per event: raw loop {1000 * raw_cpu / args.students:.2f} ms, "
        f"pipeline burst {1000 * burst_cpu / args.students:.2f} ms"
    )
    print(f"  after the burst, everything consumed and published (digests too) in {result['settled']:.0f} s")
    print(f"  at {rate}, publish to match.found: p50 {result['p50']:.0f} ms, p99 {result['p99']:.0f} ms")
    labels = {
        "members": "partner topic -> students topic (members)",
        "matching": "students topic -> match.found (matching)",
        "read": "match.found -> read by this benchmark",
    }
    for stage, (p50, p99) in result["stages"].items():
        print(f"    {labels[stage]:45s} p50 {p50:5.0f} ms, p99 {p99:5.0f} ms")
    _print_cpu(f"the {rate}", result["steady_cpu"])
    print(f"  emails (digests) delivered meanwhile: {mails}")


def _print_cpu(phase: str, used: dict[str, float]) -> None:
    """Where the CPU went: each service's seconds, and the machine's (the broker and this benchmark too)."""
    wall = used.pop("wall")
    cores = os.cpu_count() or 1
    shares = ", ".join(f"{name} {seconds:.1f}" for name, seconds in used.items())
    print(f"  CPU seconds over {phase} ({wall:.1f} s, {cores} cores: {cores * wall:.1f} to use): {shares}")


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    httpx.post(url, json=body, headers=headers, timeout=30).raise_for_status()


def _vocabulary() -> Any:
    from techport_shared.skills import vocabulary

    return vocabulary()
