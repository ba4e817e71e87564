from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from techport_dev.kafka import free_port
from techport_dev.smtp import SmtpSink
from techport_notifications.main import build
from techport_notifications.sender import Sender
from techport_notifications.settings import NotificationsSettings, SmtpSettings
from techport_shared.envelope import Envelope, from_record, to_binary
from techport_shared.events import ce_type
from techport_shared.identity import IDENTITY_HEADER, OPERATOR, issue_token
from techport_shared.runtime import ServiceRuntime
from techport_shared.settings import ConsumerSettings, KafkaSettings
from techport_shared.topics import MATCHES, NOTIFICATIONS, ORGANISATIONS, PARTNERSHIPS, STUDENTS, VACANCIES

from tests.kafka_helpers import produce, read_topic
from tests.serving import serve
from tests.waiting import eventually

SECRET = "notifications-test-secret-0123456789"


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Harness:
    url: str
    runtime: ServiceRuntime
    service: Sender
    sink: SmtpSink
    bootstrap: str

    def mails_to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.sink.messages if address in str(m["To"])]

    async def send(
        self, topic: str, type_: str, data: dict[str, Any], subject: str, source: str = "/members"
    ) -> Envelope:
        event = Envelope(type=ce_type(type_), source=source, data=data, subject=subject)
        await produce(self.bootstrap, topic, to_binary(event))
        return event

    async def organisation(self, organisation_id: str, kind: str, name: str) -> None:
        data = {
            "organisation_id": organisation_id,
            "kind": kind,
            "name": name,
            "email": f"contact@{organisation_id}.example.nl",
            "postcode": "1971 AB",
            "city": "IJmuiden",
        }
        await self.send(ORGANISATIONS.name, "organisation.registered", data, organisation_id)

    async def student(
        self,
        student_id: str,
        language: str = "nl",
        email_consent: bool = True,
        name: str = "Sanne",
        email: str | None = None,
    ) -> str:
        email = email or f"{student_id}@student.example.nl"
        data = {
            "student_id": student_id,
            "school_id": None,
            "given_name": name,
            "family_name": "de Vries",
            "email": email,
            "level": "mbo-4",
            "programme": "Techniek",
            "skills": ["weld.tig"],
            "seeking": ["job"],
            "postcode": "1971 AB",
            "max_distance_km": 25,
            "preferred_language": language,
            "consent": {"matching": True, "email": email_consent},
        }
        await self.send(STUDENTS.name, "student.registered", data, student_id)
        return email

    async def vacancy(self, vacancy_id: str, company_id: str, title: str) -> str:
        contact = f"hr-{vacancy_id}@company.example.nl"
        data = {
            "vacancy_id": vacancy_id,
            "organisation_id": company_id,
            "title": title,
            "kind": "job",
            "required_skills": ["weld.tig", "safety.vca.basic"],
            "postcode": "1951 AA",
            "positions": 1,
            "starts_on": "2027-03-01",
            "contact_email": contact,
        }
        await self.send(VACANCIES.name, "vacancy.posted", data, vacancy_id)
        return contact

    async def match(self, student_id: str, vacancy_id: str, company_id: str) -> Envelope:
        data = {
            "match_id": f"m-{student_id}-{vacancy_id}"[:64],
            "student_id": student_id,
            "vacancy_id": vacancy_id,
            "organisation_id": company_id,
            "school_id": None,
            "score": 0.75,
            "reasons": {
                "matched_skills": ["weld.tig"],
                "missing_skills": ["safety.vca.basic"],
                "preferred_matched": [],
                "distance_km": 2.3,
                "level_ok": True,
                "kind_ok": True,
            },
        }
        return await self.send(MATCHES.name, "match.found", data, student_id, source="/matching")

    async def formed(self, company_id: str, school_id: str) -> Envelope:
        data = {
            "partnership_id": uid("p"),
            "company_id": company_id,
            "school_id": school_id,
            "formed_at": "2026-11-28T08:00:00+00:00",
        }
        return await self.send(
            PARTNERSHIPS.name, "partnership.formed", data, data["partnership_id"], source="/matching"
        )

    async def notices(
        self, where: Callable[[Envelope], bool], count: int = 1, settle_s: float = 0.0, timeout_s: float = 30
    ) -> list[Envelope]:
        records = await read_topic(
            self.bootstrap,
            NOTIFICATIONS.name,
            until=lambda found: len(found) >= count,
            where=lambda r: where(from_record(r.key, r.value, r.headers)),
            settle_s=settle_s,
            timeout_s=timeout_s,
        )
        return [from_record(r.key, r.value, r.headers) for r in records]

    async def wait(self, check: Callable[[], Any], timeout_s: float = 30) -> Any:
        return await eventually(check, timeout_s)

    def operator(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={IDENTITY_HEADER: issue_token(OPERATOR, SECRET)})


@asynccontextmanager
async def running_notifications(
    db_url: str,
    kafka: KafkaSettings,
    sink: SmtpSink,
    group: str,
    digest_s: float = 1.0,
    attempts: int = 3,
    sending_claim_s: float = 600.0,
    send_batch: int = 50,
    send_rate: float = 50.0,
    poll_interval_s: float = 0.2,
) -> AsyncIterator[Harness]:
    port = free_port()
    settings = NotificationsSettings(
        database_url=db_url,
        identity_secret=SECRET,
        unsubscribe_secret=SECRET + "-unsub",
        consumer_group=group,
        digest_seconds=digest_s,
        public_url=f"http://127.0.0.1:{port}",
        send_attempts=attempts,
        backoff_initial_s=0.3,
        backoff_max_s=1.0,
        poll_interval_s=poll_interval_s,
        sending_claim_s=sending_claim_s,
        send_batch=send_batch,
        send_rate=send_rate,
        smtp=SmtpSettings(host=sink.host, port=sink.port, timeout_s=3),
        kafka=kafka,
        consumer=ConsumerSettings(max_attempts=2, backoff_initial_s=0.05, auto_offset_reset="latest"),
    )
    app, runtime, service = build(settings)
    async with serve(app, port) as url:
        await runtime.wait_for_assignment()
        yield Harness(url, runtime, service, sink, kafka.kafka_bootstrap_servers)


@pytest.fixture
def smtp_sink(tmp_path) -> AsyncIterator[SmtpSink]:
    with SmtpSink(tmp_path / "mail") as sink:
        yield sink


@pytest.fixture
async def notifications(
    db_url: str, kafka_topics: KafkaSettings, smtp_sink: SmtpSink
) -> AsyncIterator[Harness]:
    async with running_notifications(db_url, kafka_topics, smtp_sink, uid("notifications-test")) as harness:
        yield harness
