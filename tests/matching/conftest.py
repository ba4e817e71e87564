from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from techport_matching.keeper import IndexKeeper
from techport_matching.main import build
from techport_matching.settings import MatchingSettings
from techport_shared.envelope import Envelope, from_record, to_binary
from techport_shared.events import ce_type
from techport_shared.identity import IDENTITY_HEADER, OPERATOR, Identity, issue_token
from techport_shared.runtime import ServiceRuntime
from techport_shared.settings import ConsumerSettings, KafkaSettings
from techport_shared.topics import ORGANISATIONS, STUDENTS, VACANCIES

from tests.kafka_helpers import produce, read_topic
from tests.serving import serve
from tests.waiting import eventually

SECRET = "matching-test-secret-0123456789abcdef"
KEY = SECRET.encode()  # match ids are keyed with the identity secret unless MATCHING_REFERENCE_SECRET is set
IJMUIDEN = {"lat": 52.4579, "lon": 4.6248}
VELSEN_NOORD = {"lat": 52.4728, "lon": 4.6424}
ALKMAAR = {"lat": 52.6324, "lon": 4.7534}  # ~21 km from IJmuiden
DEN_HELDER = {"lat": 52.9563, "lon": 4.7608}  # ~56 km


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def student(student_id: str, school_id: str | None, **changes: Any) -> dict[str, Any]:
    return {
        "student_id": student_id,
        "school_id": school_id,
        "given_name": "Noor",
        "family_name": "Jansen",
        "email": f"{student_id}@student.example.nl",
        "level": "mbo-4",
        "programme": "Monteur mechatronica",
        "skills": ["safety.gwo.bst", "safety.heights", "elec.troubleshooting", "lang.en"],
        "seeking": ["apprenticeship", "internship"],
        "postcode": "1971 AB",
        "location": IJMUIDEN,
        "max_distance_km": 25,
        "preferred_language": "nl",
        "consent": {"matching": True, "email": True},
    } | changes


def vacancy(vacancy_id: str, company_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "vacancy_id": vacancy_id,
        "organisation_id": company_id,
        "title": "BBL Monteur windturbines",
        "description": "",
        "kind": "apprenticeship",
        "required_skills": ["safety.gwo.bst", "safety.heights", "elec.troubleshooting", "wind.turbine.maint"],
        "preferred_skills": ["lang.en"],
        "levels": ["mbo-3", "mbo-4"],
        "postcode": "1951 AA",
        "location": VELSEN_NOORD,
        "positions": 2,
        "starts_on": "2027-03-01",
        "contact_email": "hr@example.nl",
    } | changes


@dataclass
class MatchingHarness:
    url: str
    runtime: ServiceRuntime
    service: IndexKeeper
    bootstrap: str

    def client(self, identity: Identity = OPERATOR) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={IDENTITY_HEADER: issue_token(identity, SECRET)}, timeout=10
        )

    async def send(self, topic: str, type_: str, data: dict[str, Any], subject: str, **kw: Any) -> Envelope:
        event = Envelope(type=ce_type(type_), source="/members", data=data, subject=subject, **kw)
        await produce(self.bootstrap, topic, to_binary(event))
        return event

    async def organisation(self, organisation_id: str, kind: str) -> None:
        data = {
            "organisation_id": organisation_id,
            "kind": kind,
            "name": organisation_id,
            "email": "x@example.nl",
            "postcode": "1971 AB",
            "city": "IJmuiden",
        }
        await self.send(ORGANISATIONS.name, "organisation.registered", data, organisation_id)

    async def student(self, data: dict[str, Any], type_: str = "student.registered", **kw: Any) -> Envelope:
        return await self.send(STUDENTS.name, type_, data, data["student_id"], **kw)

    async def vacancy(self, data: dict[str, Any], type_: str = "vacancy.posted", **kw: Any) -> Envelope:
        return await self.send(VACANCIES.name, type_, data, data["vacancy_id"], **kw)

    async def events(
        self,
        topic: str,
        where: Callable[[Envelope], bool],
        count: int = 1,
        settle_s: float = 0.0,
        timeout_s: float = 30,
    ) -> list[Envelope]:
        records = await read_topic(
            self.bootstrap,
            topic,
            until=lambda found: len(found) >= count,
            where=lambda r: where(from_record(r.key, r.value, r.headers)),
            settle_s=settle_s,
            timeout_s=timeout_s,
        )
        return [from_record(r.key, r.value, r.headers) for r in records]

    async def wait(self, check: Callable[[], Any], timeout_s: float = 30) -> Any:
        return await eventually(check, timeout_s)


@asynccontextmanager
async def running_matching(db_url: str, kafka: KafkaSettings, group: str) -> AsyncIterator[MatchingHarness]:
    settings = MatchingSettings(
        database_url=db_url,
        identity_secret=SECRET,
        kafka=kafka,
        consumer_group=group,
        # From the end of the topics: earlier tests' students and vacancies would match this test's.
        consumer=ConsumerSettings(max_attempts=2, backoff_initial_s=0.05, auto_offset_reset="latest"),
    )
    app, runtime, service = build(settings)
    async with serve(app) as url:
        await runtime.wait_for_assignment()
        yield MatchingHarness(url, runtime, service, kafka.kafka_bootstrap_servers)


@pytest.fixture
async def matching(db_url: str, kafka_topics: KafkaSettings) -> AsyncIterator[MatchingHarness]:
    async with running_matching(db_url, kafka_topics, uid("matching-test")) as harness:
        yield harness
