"""A load generator with known ids, and what the platform must end up with because of it.

The data is shaped so the expected outcome is exact: vacancy j requires its own two skills, student i has the
two skills of vacancy i mod V, so each student matches exactly one vacancy (coverage 1.0) and no other
(coverage 0). Half of the students and vacancies arrive as partner events on the ingress topic, half through
the gateway's API; a few partner events are invalid and must be rejected, each with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from techport_shared.envelope import Envelope, to_binary
from techport_shared.events import ce_type
from techport_shared.kafka import plain_producer
from techport_shared.settings import KafkaSettings
from techport_shared.skills import vocabulary
from techport_shared.topics import partner_topics

from tests.faults.harness import OPERATOR_KEY, Platform

POSTCODES = ("1972 AB", "1951 AA", "1971 BX", "1991 AB", "1941 AA")
_next_skill = [0]  # the first skill no dataset of this process has used yet


@dataclass
class Dataset:
    tag: str
    organisations: list[dict[str, Any]]
    vacancies: list[dict[str, Any]]
    students: list[dict[str, Any]]
    invalid: list[Envelope]
    keys: dict[str, str] = field(default_factory=dict)  # organisation id -> API key

    @classmethod
    def build(cls, students: int = 36, vacancies: int = 6) -> Dataset:
        tag = uuid.uuid4().hex[:6]
        # Skills of their own: datasets sharing a platform must not match each other's vacancies.
        first = _next_skill[0]
        _next_skill[0] += 2 * vacancies
        skills = sorted(vocabulary().skills.values(), key=lambda s: s.code)[first : first + 2 * vacancies]
        assert len(skills) == 2 * vacancies, "the vocabulary has run out of unused skills"
        schools = [
            {
                "organisation_id": f"school-{tag}-{k}",
                "kind": "school",
                "name": f"Zeehaven College {k}",
                "email": f"info{k}@school-{tag}.example.nl",
                "postcode": POSTCODES[k],
                "city": "IJmuiden",
                "brin_code": f"2{k}LH",
            }
            for k in range(2)
        ]
        companies = [
            {
                "organisation_id": f"company-{tag}-{k}",
                "kind": "company",
                "name": f"Windservice IJmond {k}",
                "kvk_number": f"3456789{k}",
                "email": f"info{k}@company-{tag}.example.nl",
                "postcode": POSTCODES[2 + k],
                "city": "Velsen-Noord",
            }
            for k in range(2)
        ]
        vacancy_list = [
            {
                "vacancy_id": f"vac-{tag}-{j}",
                "organisation_id": companies[j * 2 // vacancies]["organisation_id"],
                "title": f"BBL Monteur {j}",
                "kind": "apprenticeship",
                "required_skills": [skills[2 * j].nl, skills[2 * j + 1].nl],
                "levels": ["mbo-3", "mbo-4"],
                "postcode": POSTCODES[j % len(POSTCODES)],
                "positions": 2,
                "starts_on": "2027-03-01",
                "contact_email": f"hr{j}@company-{tag}.example.nl",
            }
            for j in range(vacancies)
        ]
        student_list = [
            {
                "student_id": f"stu-{tag}-{i}",
                "school_id": schools[i % 2]["organisation_id"],
                # Unique per dataset: the erasure check looks for these anywhere in any database.
                "given_name": f"Noor{tag}{i}",
                "family_name": f"Visser{tag}{i}",
                "email": f"student{i}@student-{tag}.example.nl",
                "level": "mbo-4",
                "programme": "Monteur mechatronica",
                "skills": [skills[2 * (i % vacancies)].en, skills[2 * (i % vacancies) + 1].en],
                "seeking": ["apprenticeship"],
                "postcode": POSTCODES[i % len(POSTCODES)],
                "max_distance_km": 40,
                "consent": {"matching": True, "email": True},
            }
            for i in range(students)
        ]
        invalid = [
            _student_event({**student_list[0], "student_id": f"bad-{tag}-pc", "postcode": "0000 XX"}),
            _student_event({**student_list[0], "student_id": f"bad-{tag}-level", "level": "phd"}),
            _student_event({**student_list[0], "student_id": f"bad-{tag}-email", "email": "not-an-email"}),
            _student_event(
                {**student_list[0], "student_id": f"bad-{tag}-forged"},
                source=f"/partners/{companies[0]['organisation_id']}",
            ),
        ]
        return cls(tag, [*schools, *companies], vacancy_list, student_list, invalid)

    # --- what must come out ---------------------------------------------------------------------------------
    def vacancy_of(self, student: dict[str, Any]) -> dict[str, Any]:
        return self.vacancies[int(student["student_id"].rsplit("-", 1)[1]) % len(self.vacancies)]

    @property
    def expected_matches(self) -> set[tuple[str, str]]:
        return {(s["student_id"], self.vacancy_of(s)["vacancy_id"]) for s in self.students}

    @property
    def expected_partnerships(self) -> set[tuple[str, str]]:
        counts: dict[tuple[str, str], int] = {}
        for s in self.students:
            pair = (self.vacancy_of(s)["organisation_id"], s["school_id"])
            counts[pair] = counts.get(pair, 0) + 1
        return {pair for pair, n in counts.items() if n >= 3}

    def by_api(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return items[0::2]

    def by_ingress(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return items[1::2]


def _student_event(student: dict[str, Any], source: str | None = None) -> Envelope:
    return Envelope(
        type=ce_type("student.registered"),
        source=source or f"/partners/{student['school_id']}",
        subject=student["student_id"],
        data=student,
        id=f"sis-{student['student_id']}",
    )


def _vacancy_event(vacancy: dict[str, Any]) -> Envelope:
    return Envelope(
        type=ce_type("vacancy.posted"),
        source=f"/partners/{vacancy['organisation_id']}",
        subject=vacancy["vacancy_id"],
        data=vacancy,
        id=f"hr-{vacancy['vacancy_id']}",
    )


class LoadGenerator:
    """Sends the dataset at a steady pace as partners and API users would: retrying until each input is
    taken (a 409 on a retried create means the first attempt landed), never giving up while the platform is
    partly down."""

    def __init__(self, platform: Platform, data: Dataset, give_up_s: float = 180.0) -> None:
        self.platform = platform
        self.data = data
        self.give_up_s = give_up_s
        self.sent = 0
        self.retries = 0

    async def register_organisations(self) -> None:
        async with self.platform.client(OPERATOR_KEY) as operator:
            for organisation in self.data.organisations:
                response = await self._post(operator, "/organisations", organisation)
                self.data.keys[organisation["organisation_id"]] = response.json()["api_key"]

    def ingress_events(self) -> list[Envelope]:
        return [
            *map(_vacancy_event, self.data.by_ingress(self.data.vacancies)),
            *map(_student_event, self.data.by_ingress(self.data.students)),
            *self.data.invalid,
        ]

    async def run(self, duration_s: float = 12.0, duplicate: bool = False) -> None:
        """Everything, spread over `duration_s`: vacancies, then students; API and ingress interleaved."""
        steps: list[tuple[str, Any]] = []
        api_vacancies = [("vacancy", v) for v in self.data.by_api(self.data.vacancies)]
        api_students = [("student", s) for s in self.data.by_api(self.data.students)]
        ingress = [("event", e) for e in self.ingress_events()]
        steps = _interleave(api_vacancies, [s for s in ingress if s[1].type == ce_type("vacancy.posted")])
        steps += _interleave(api_students, [s for s in ingress if s[1].type != ce_type("vacancy.posted")])
        pause = duration_s / max(1, len(steps))
        producer = await self._started_producer()
        try:
            for kind, item in steps:
                for _ in range(2 if duplicate else 1):
                    if kind == "event":
                        await self._publish(producer, item)
                    else:
                        await self._create(kind, item)
                    self.sent += 1
                await asyncio.sleep(pause)
        finally:
            await producer.stop()

    async def _create(self, kind: str, item: dict[str, Any]) -> None:
        owner = item["school_id"] if kind == "student" else item["organisation_id"]
        async with self.platform.client(self.data.keys[owner]) as client:
            await self._post(client, f"/{kind.replace('vacancy', 'vacancie')}s", item)

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
        deadline = asyncio.get_running_loop().time() + self.give_up_s
        while True:
            with contextlib.suppress(httpx.TransportError):
                response = await client.post(path, json=body)
                if response.status_code in (200, 201, 202):
                    return response
                if response.status_code == 409:  # the earlier attempt was stored; its answer was lost
                    return response
                assert response.status_code >= 500 or response.status_code == 429, (path, response.text)
            self.retries += 1
            assert asyncio.get_running_loop().time() < deadline, f"{path} not accepted in {self.give_up_s}s"
            await asyncio.sleep(0.5)

    async def _started_producer(self) -> AIOKafkaProducer:
        """A partner system's producer, started; a fresh one for each attempt (a producer whose start failed
        is not reused)."""
        deadline = asyncio.get_running_loop().time() + self.give_up_s
        while True:
            producer = plain_producer(
                KafkaSettings(kafka_bootstrap_servers=self.platform.bootstrap, kafka_request_timeout_ms=5000)
            )
            try:
                await producer.start()
                return producer
            except Exception as exc:
                await producer.stop()
                late = asyncio.get_running_loop().time() > deadline
                assert not late, f"no producer started in {self.give_up_s}s: {exc!r}"
                await asyncio.sleep(0.5)

    async def _publish(self, producer: AIOKafkaProducer, envelope: Envelope) -> None:
        record = to_binary(envelope)
        deadline = asyncio.get_running_loop().time() + self.give_up_s
        while True:
            # Each partner writes its own ingress topic (the one its source names, forged or not).
            topic = partner_topics(envelope.source.removeprefix("/partners/")).ingress
            try:
                await producer.send_and_wait(
                    topic, record.value, key=record.key, headers=record.header_list()
                )
                return
            except Exception:
                # A partner system resends with the same event id; members deduplicates it.
                self.retries += 1
                assert asyncio.get_running_loop().time() < deadline, "broker unreachable for too long"
                await asyncio.sleep(0.5)


def _interleave(a: list[Any], b: list[Any]) -> list[Any]:
    out: list[Any] = []
    for i in range(max(len(a), len(b))):
        out.extend(x[i] for x in (a, b) if i < len(x))
    return out
