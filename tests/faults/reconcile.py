"""The end state, read from every service's database, the SMTP server and the topics, against what the load
must have caused: every accepted input stored once, every expected match found once, every expected email
delivered once, every invalid input rejected with a reason, and nothing else."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from techport_cli.topics import read_topic
from techport_shared.events import ce_type
from techport_shared.settings import KafkaSettings
from techport_shared.topics import DLQ, MATCHES, PARTNER_PREFIX, partner_topics

from tests.faults.harness import Platform
from tests.faults.load import Dataset, LoadGenerator


@dataclass
class State:
    students: list[str]
    vacancies: list[str]
    matches: list[tuple[str, str]]
    partnerships: list[tuple[str, str]]
    sent: dict[str, str]  # notification id -> Message-ID, status sent
    pending: int
    items: dict[tuple[str, str], str]  # (recipient kind:id, match id) -> notification id
    match_ids: dict[tuple[str, str], str]
    mails: Counter[str]  # Message-ID -> times the SMTP server accepted it
    rejections: dict[str, list[str]] = field(default_factory=dict)  # rejected ce id -> error fields
    dead_letters: list[dict[str, str]] = field(default_factory=list)
    match_found_events: int = 0
    match_found_ids: int = 0


async def read_state(platform: Platform, data: Dataset) -> State:
    """The state of this dataset's inputs (its ids carry its tag: several runs can share one platform)."""
    tag = data.tag
    students = [
        r[0]
        for r in await platform.rows(
            "members", f"SELECT student_id FROM students WHERE student_id LIKE 'stu-{tag}-%'"
        )
    ]
    vacancies = [
        r[0]
        for r in await platform.rows(
            "members", f"SELECT vacancy_id FROM vacancies WHERE vacancy_id LIKE 'vac-{tag}-%'"
        )
    ]
    match_rows = await platform.rows(
        "matching",
        "SELECT student_id, vacancy_id, match_id FROM matches "
        f"WHERE status = 'open' AND student_id LIKE 'stu-{tag}-%'",
    )
    partnerships = await platform.rows(
        "matching", f"SELECT company_id, school_id FROM partnerships WHERE company_id LIKE 'company-{tag}-%'"
    )
    mine = (
        f"((recipient_kind = 'student' AND recipient_id LIKE 'stu-{tag}-%') "
        f"OR (recipient_kind = 'vacancy_contact' AND recipient_id LIKE 'vac-{tag}-%'))"
    )
    notifications = await platform.rows(
        "notifications", f"SELECT notification_id, status, message_id FROM notifications WHERE {mine}"
    )
    items = await platform.rows(
        "notifications",
        "SELECT recipient_kind, recipient_id, subject_id, notification_id FROM notification_items "
        f"WHERE {mine}",
    )
    mails = Counter(
        str(m["Message-ID"]) for m in platform.sink.messages if f"-{tag}.example.nl" in str(m["To"])
    )
    return State(
        students=students,
        vacancies=vacancies,
        matches=[(s, v) for s, v, _ in match_rows],
        partnerships=[(c, s) for c, s in partnerships],
        sent={n: m for n, status, m in notifications if status == "sent"},
        pending=sum(1 for _, status, _ in notifications if status == "pending"),
        items={(f"{k}:{r}", s): n for k, r, s, n in items},
        match_ids={(s, v): m for s, v, m in match_rows},
        mails=mails,
    )


async def read_topic_to_end(bootstrap: str, topic: str) -> list[object]:
    return await read_topic(KafkaSettings(kafka_bootstrap_servers=bootstrap), topic)


def _header(record: object, name: str) -> str | None:
    for key, value in getattr(record, "headers", ()) or ():
        if key == name:
            return value.decode("utf-8", "replace")
    return None


async def read_topics(platform: Platform, data: Dataset, state: State) -> None:
    tag = data.tag
    for organisation in data.organisations:  # each partner's own rejected topic
        rejected_topic = partner_topics(organisation["organisation_id"]).rejected
        for record in await read_topic_to_end(platform.bootstrap, rejected_topic):
            rejected = json.loads(record.value)  # type: ignore[attr-defined]
            # The dataset's own events (a record with no event id is named by its place in the topic).
            if f"-{tag}-" in rejected["ce_id"] and not rejected["ce_id"].startswith(PARTNER_PREFIX):
                fields = [e["field"] for e in rejected["errors"]]
                state.rejections.setdefault(rejected["ce_id"], []).extend(fields)
    state.dead_letters = [
        {k: v.decode("utf-8", "replace") for k, v in r.headers}  # type: ignore[attr-defined]
        for r in await read_topic_to_end(platform.bootstrap, DLQ.name)
        if f"-{tag}".encode() in (r.key or b"")  # type: ignore[attr-defined]
    ]
    found = [
        r for r in await read_topic_to_end(platform.bootstrap, MATCHES.name)
        if _header(r, "ce_type") == ce_type("match.found") and r.key.startswith(f"stu-{tag}-".encode())  # type: ignore[attr-defined]
    ]  # fmt: skip
    state.match_found_events = len(found)
    state.match_found_ids = len({_header(r, "ce_id") for r in found})


def problems(data: Dataset, state: State, allow_resent_email: bool = False) -> list[str]:
    """What differs from the exact expected end state; empty when it is reached."""
    out = []
    expected_students = {s["student_id"] for s in data.students}
    if Counter(state.students) != Counter(expected_students):
        out.append(f"students {len(state.students)} != {len(expected_students)}")
    expected_vacancies = {v["vacancy_id"] for v in data.vacancies}
    if Counter(state.vacancies) != Counter(expected_vacancies):
        out.append(f"vacancies {len(state.vacancies)} != {len(expected_vacancies)}")
    if Counter(state.matches) != Counter(data.expected_matches):
        out.append(f"matches {len(state.matches)} != {len(data.expected_matches)}")
    if Counter(state.partnerships) != Counter(data.expected_partnerships):
        out.append(f"partnerships {sorted(state.partnerships)} != {sorted(data.expected_partnerships)}")
    # Every match is told to its student and to the vacancy's contact, each in exactly one sent email.
    expected_items = {
        (who, match_id)
        for (student, vacancy), match_id in state.match_ids.items()
        for who in (f"student:{student}", f"vacancy_contact:{vacancy}")
    }
    told = {key for key, notification in state.items.items() if notification in state.sent}
    if told != expected_items or len(expected_items) != 2 * len(data.expected_matches):
        out.append(f"emailed items {len(told)} != {2 * len(data.expected_matches)} (pending {state.pending})")
    delivered = set(state.mails)
    if delivered != set(state.sent.values()):
        out.append(f"mails {len(delivered)} != sent notifications {len(state.sent)}")
    resent = {m: n for m, n in state.mails.items() if n > 1}
    if resent and not allow_resent_email:
        out.append(f"emails delivered twice: {len(resent)}")
    return out


async def reconcile(
    platform: Platform, data: Dataset, timeout_s: float = 150.0, allow_resent_email: bool = False
) -> State:
    """Wait until the platform has settled into the exact expected state, then check the topics too."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        state = await read_state(platform, data)
        found = problems(data, state, allow_resent_email)
        if not found:
            break
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reconciled in {timeout_s}s: {found}\n{await diagnose(platform)}")
        await asyncio.sleep(1.0)
    await read_topics(platform, data, state)
    invalid = {e.id for e in data.invalid}
    assert set(state.rejections) == invalid, (set(state.rejections), invalid)
    assert all(state.rejections[i] for i in invalid), "every rejection names a field"
    assert state.match_found_ids == len(data.expected_matches), state.match_found_ids
    return state


async def diagnose(platform: Platform) -> str:
    """What a failed reconciliation needs to be understood from CI output alone: every service's unpublished
    outbox rows and the last distinct warnings and errors of its log."""
    lines = []
    for name, service in platform.services.items():
        alive = service.process is not None and service.process.poll() is None
        state = "running" if alive else "not running"
        lines.append(f"--- {name} ({state}): unpublished outbox {await _backlog(platform, name)}")
        lines.extend(f"    {line}" for line in _last_problems(service.log.read_text(errors="replace")))
    return "\n".join(lines)


async def _backlog(platform: Platform, service: str) -> str:
    """count, most attempts and last error of the service's unpublished outbox rows, or why they are unknown:
    a diagnosis must not fail itself (not every service has an outbox, a database may still be away)."""
    if service not in platform.database_urls:
        return "(no database)"
    try:
        if "outbox" not in await platform.tables(service):
            return "(no outbox)"
        rows = await platform.rows(
            service,
            "SELECT count(*), max(attempts), max(last_error), "
            "sum(CASE WHEN parked_at IS NULL THEN 0 ELSE 1 END) FROM outbox WHERE published_at IS NULL",
        )
        count, attempts, error, parked = rows[0]
        return f"{count} (parked {parked or 0}), most attempts {attempts}, last error {error}"
    except Exception as error:  # reported, not raised
        return f"(unreadable: {error!r})"


_TIMESTAMP = re.compile(r'"timestamp": "[^"]*",? ?')


def _last_problems(log: str, count: int = 12) -> list[str]:
    seen: dict[str, None] = {}
    for line in reversed(log.splitlines()):
        if '"level": "warning"' in line or '"level": "error"' in line or "Traceback" in line:
            seen.setdefault(_TIMESTAMP.sub("", line)[:400], None)
            if len(seen) >= count:
                break
    return list(reversed(seen))


def report(name: str, sent: int, state: State) -> str:
    resent = sum(n - 1 for n in state.mails.values() if n > 1)
    return (
        f"[{name}] inputs {sent}, stored students {len(state.students)} vacancies {len(state.vacancies)}, "
        f"matches {len(state.matches)} (match.found records {state.match_found_events}, distinct "
        f"{state.match_found_ids}), partnerships {len(state.partnerships)}, "
        f"emails {sum(state.mails.values())} "
        f"(distinct {len(state.mails)}, resent {resent}), rejections {len(state.rejections)}, "
        f"DLQ {len(state.dead_letters)}"
    )


Fault = Callable[[Platform], Awaitable[object]]


async def under_load(
    platform: Platform,
    name: str,
    fault: Fault,
    duration_s: float = 12.0,
    allow_resent_email: bool = False,
    data: Dataset | None = None,
) -> State:
    """Send a fresh dataset at a steady pace, inject the fault mid-batch, then reconcile exactly."""
    data = data or Dataset.build()
    load = LoadGenerator(platform, data)
    await load.register_organisations()
    sending = asyncio.create_task(load.run(duration_s=duration_s))
    await asyncio.sleep(3.0)
    await fault(platform)
    await sending
    state = await reconcile(platform, data, allow_resent_email=allow_resent_email)
    print(report(name, load.sent, state), f"retries by the load generator: {load.retries}")
    return state
