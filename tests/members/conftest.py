from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from techport_members.main import build
from techport_members.settings import MembersSettings
from techport_shared.envelope import Envelope, from_record, to_binary, to_structured
from techport_shared.events import ce_type
from techport_shared.identity import IDENTITY_HEADER, OPERATOR, Identity, issue_token, organisation
from techport_shared.runtime import ServiceRuntime
from techport_shared.sealing import key_id, open_sealed
from techport_shared.settings import ConsumerSettings, KafkaSettings
from techport_shared.topics import partner_topics

from tests.kafka_helpers import produce, read_topic
from tests.serving import serve
from tests.waiting import eventually

SECRET = "test-identity-secret-0123456789abcdef"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def organisation_data(organisation_id: str, kind: str, **extra: Any) -> dict[str, Any]:
    data = {
        "organisation_id": organisation_id,
        "kind": kind,
        "name": f"{kind.title()} {organisation_id}",
        "email": f"info@{organisation_id}.example.nl",
        "postcode": "1971 AB",
        "city": "IJmuiden",
    }
    if kind == "school":
        data["brin_code"] = "25LH"
    if kind == "company":
        data["kvk_number"] = "34123456"
    return data | extra


def student_data(student_id: str, school_id: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "student_id": student_id,
        "school_id": school_id,
        "given_name": "Sanne",
        "family_name": "de Vries",
        "email": f"{student_id}@student.example.nl",
        "level": "mbo-4",
        "programme": "Technicus engineering",
        "crebo": "25336",
        "skills": ["TIG-lassen", "VCA Basis", "hydrauliek", "onderwater lassen"],
        "seeking": ["internship", "apprenticeship"],
        "postcode": "1972ab",
        "max_distance_km": 30,
        "available_from": "2027-02-01",
        "preferred_language": "nl",
        "consent": {"matching": True, "email": True},
    } | extra


def vacancy_data(vacancy_id: str, organisation_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "vacancy_id": vacancy_id,
        "organisation_id": organisation_id,
        "title": "BBL Monteur offshore wind",
        "description": "Onderhoud aan windturbines op zee.",
        "kind": "apprenticeship",
        "required_skills": ["GWO Basic Safety Training", "Werken op hoogte", "elektrisch storingzoeken"],
        "preferred_skills": ["Engels"],
        "levels": ["mbo-3", "mbo-4"],
        "postcode": "1976 BD",
        "positions": 2,
        "hours_per_week": 32,
        "starts_on": "2027-03-01",
        "closes_on": "2027-02-15",
        "contact_email": "hr@windservice.example.nl",
    } | extra


@dataclass
class Members:
    url: str
    runtime: ServiceRuntime
    bootstrap: str
    started_at: float

    def client(self, identity: Identity | None = OPERATOR) -> httpx.AsyncClient:
        headers = {IDENTITY_HEADER: issue_token(identity, SECRET)} if identity is not None else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)

    async def setup_network(self) -> tuple[str, str]:
        """A school and a company, registered by the operator through the API."""
        school, company = uid("school"), uid("company")
        async with self.client() as client:
            for org in (organisation_data(school, "school"), organisation_data(company, "company")):
                response = await client.post("/organisations", json=org)
                assert response.status_code == 201, response.text
        return school, company

    async def publish(self, event: Envelope, structured: bool = False, as_partner: str | None = None) -> None:
        """On the ingress topic of `as_partner`, by default the organisation the event's source names."""
        record = to_structured(event) if structured else to_binary(event)
        partner = as_partner or event.source.removeprefix("/partners/")
        await produce(self.bootstrap, partner_topics(partner).ingress, record)

    async def rejections(
        self, partner: str, ids: list[str], settle_s: float = 0.0, count: int | None = None
    ) -> list[Envelope]:
        """The rejections on `partner`'s own rejected topic of the events with these ids."""
        return await self.events(
            partner_topics(partner).rejected,
            lambda e: e.data.get("ce_id") in ids,
            count=len(ids) if count is None else count,
            settle_s=settle_s,
        )

    async def unsealed(self, event: Envelope) -> dict[str, Any]:
        """A student event's data with its personal fields opened with members' key for the student."""
        async with self.runtime.uow() as uow:
            keys = await uow.members.student_keys({event.data["student_id"]: key_id(event.data)})
        return open_sealed(event.data, keys[event.data["student_id"]])

    async def wait(self, check: Callable[[], Any], timeout_s: float = 30) -> Any:
        return await eventually(check, timeout_s)

    async def events(
        self, topic: str, where: Callable[[Envelope], bool], count: int = 1, settle_s: float = 0.0
    ) -> list[Envelope]:
        records = await read_topic(
            self.bootstrap,
            topic,
            until=lambda found: len({(r.headers and dict(r.headers).get("ce_id")) for r in found}) >= count,
            where=lambda r: where(from_record(r.key, r.value, r.headers)),
            settle_s=settle_s,
        )
        return [from_record(r.key, r.value, r.headers) for r in records]


def partner_event(partner: str, type_: str, data: dict[str, Any], subject: str, **kw: Any) -> Envelope:
    return Envelope(type=ce_type(type_), source=f"/partners/{partner}", data=data, subject=subject, **kw)


@pytest.fixture
async def members(db_url: str, kafka_topics: KafkaSettings) -> AsyncIterator[Members]:
    settings = MembersSettings(
        database_url=db_url,
        identity_secret=SECRET,
        kafka=kafka_topics,
        consumer_group=uid("members-ingress-test"),
        consumer=ConsumerSettings(max_attempts=2, backoff_initial_s=0.05),
    )
    app, runtime = build(settings)
    async with serve(app) as url:
        yield Members(url, runtime, kafka_topics.kafka_bootstrap_servers, asyncio.get_running_loop().time())


__all__ = ["organisation", "partner_event", "student_data", "uid", "vacancy_data"]
