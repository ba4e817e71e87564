"""Nobody let in, nothing executed, nothing kept: against the platform as separate processes."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from techport_shared.envelope import Envelope, KafkaRecord, to_binary
from techport_shared.events import ce_type
from techport_shared.topics import DLQ, STUDENTS, partner_topics

from tests.faults.harness import Platform
from tests.faults.load import Dataset, LoadGenerator
from tests.faults.reconcile import read_topic_to_end, reconcile
from tests.kafka_helpers import produce
from tests.waiting import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.timeout(300)]

# The signed token in an unsubscribe link is its own credential (the page, its button, one-click, undo).
PUBLIC = {
    ("get", "/api/v1/unsubscribe"),
    ("post", "/api/v1/unsubscribe"),
    ("post", "/api/v1/unsubscribe/undo"),
}


@pytest.fixture
async def network(shared_platform: Platform) -> Dataset:
    data = Dataset.build(students=6, vacancies=2)
    load = LoadGenerator(shared_platform, data)
    await load.register_organisations()
    await load.run(duration_s=1.0)
    await reconcile(shared_platform, data)
    return data


def _operations(openapi: dict) -> list[tuple[str, str]]:
    return [
        (method, path)
        for path, item in openapi["paths"].items()
        for method in item
        if method in {"get", "post", "patch", "put", "delete"}
    ]


def _concrete(path: str, data: Dataset) -> str:
    school, company = data.organisations[0]["organisation_id"], data.organisations[2]["organisation_id"]
    return (
        path.replace("{student_id}", data.students[0]["student_id"])
        .replace("{vacancy_id}", data.vacancies[0]["vacancy_id"])
        .replace("{organisation_id}", school)
        .replace("{partnership_id}", f"p-{company}")
        .replace("{key_id}", "k-unknown")
    )


async def test_every_route_refuses_no_key_a_wrong_key_and_another_organisations_key(
    shared_platform: Platform, network: Dataset
) -> None:
    async with httpx.AsyncClient(base_url=shared_platform.services["gateway"].url, timeout=20) as http:
        openapi = (await http.get("/openapi.json")).json()
        operations = _operations(openapi)
        assert len(operations) >= 15
        other_school_key = network.keys[network.organisations[1]["organisation_id"]]
        checked = 0
        for method, path in operations:
            if (method, path) in PUBLIC or not path.startswith("/api/v1/"):
                continue  # health and metrics are for probes and Prometheus; the Ingress routes only /api/v1
            url = _concrete(path, network)
            for headers in (
                {},
                {"Authorization": "Bearer tpk_wrong_0123456789"},
                {"Authorization": "Basic eDp5"},
            ):
                response = await http.request(method, url, headers=headers, json={})
                assert response.status_code == 401, (method, path, headers, response.status_code)
            checked += 1
        # Another organisation's key reaches nothing of the first school's or company's.
        as_other = {"Authorization": f"Bearer {other_school_key}"}
        student = network.students[0]
        denied = [
            ("get", f"/api/v1/students/{student['student_id']}", None),
            ("patch", f"/api/v1/students/{student['student_id']}", {"programme": "Hacked"}),
            ("delete", f"/api/v1/students/{student['student_id']}", None),
            ("get", f"/api/v1/students/{student['student_id']}/matches", None),
            ("get", f"/api/v1/vacancies/{network.vacancies[0]['vacancy_id']}/matches", None),
            ("post", "/api/v1/students", {**student, "student_id": "stu-stolen"}),
            ("post", f"/api/v1/vacancies/{network.vacancies[0]['vacancy_id']}/close", {"reason": "filled"}),
            ("get", "/api/v1/notifications?recipient_id=" + student["student_id"], None),
            ("post", "/api/v1/admin/reindex", None),
        ]
        for method, url, body in denied:
            response = await http.request(method, url, headers=as_other, json=body)
            assert response.status_code in (403, 404), (method, url, response.status_code, response.text)
    print(
        f"[security] {checked} operations refuse no key, a wrong key and a wrong scheme; "
        f"{len(denied)} refuse another organisation"
    )
    async with shared_platform.client(network.keys[student["school_id"]]) as owner:
        assert (await owner.get(f"/students/{student['student_id']}")).json()["programme"] != "Hacked"


async def test_a_partner_event_with_a_forged_source_is_rejected_and_not_stored(
    shared_platform: Platform, network: Dataset
) -> None:
    victim_school = network.organisations[0]["organisation_id"]
    attacker = network.organisations[2]["organisation_id"]  # a company posing as the school
    forged = Envelope(
        type=ce_type("student.registered"),
        source=f"/partners/{victim_school}",  # claims to be the school, on the company's own topic
        subject="stu-forged",
        data={**network.students[0], "student_id": f"stu-forged-{network.tag}", "school_id": victim_school},
        id=f"forged-{network.tag}",
    )
    await produce(shared_platform.bootstrap, partner_topics(attacker).ingress, to_binary(forged))

    async def rejection():
        for record in await read_topic_to_end(shared_platform.bootstrap, partner_topics(attacker).rejected):
            if forged.id.encode() in record.value:
                return record
        return None

    record = await eventually(rejection)
    assert record.key == attacker.encode()  # told to the sender, not to the school
    assert b"ce_source" in record.value
    assert not await shared_platform.rows(
        "members", f"SELECT 1 FROM students WHERE student_id = '{forged.data['student_id']}'"
    )


async def test_oversized_and_malformed_bodies_get_a_clear_4xx(
    shared_platform: Platform, network: Dataset
) -> None:
    key = network.keys[network.organisations[0]["organisation_id"]]
    async with shared_platform.client(key) as client:
        huge = await client.post("/students", content=b'{"x": "' + b"a" * 2_000_000 + b'"}',
                                 headers={"Content-Type": "application/json"})  # fmt: skip
        assert huge.status_code == 413
        broken = await client.post(
            "/students", content=b'{"student_id": ', headers={"Content-Type": "application/json"}
        )
        assert broken.status_code == 422 and broken.json()["detail"]
        wrong = await client.post("/students", json={"student_id": 5, "email": "nope"})
        fields = {tuple(e["loc"]) for e in wrong.json()["detail"]}
        assert wrong.status_code == 422 and ("body", "email") in fields and ("body", "given_name") in fields


async def test_sql_and_script_looking_strings_are_stored_and_returned_inert(
    shared_platform: Platform, network: Dataset
) -> None:
    school = network.organisations[0]["organisation_id"]
    nasty = {
        **network.students[0],
        "student_id": f"stu-{network.tag}-nasty",
        "given_name": "Robert'); DROP TABLE students;--",
        "family_name": "<script>alert('x')</script>",
        "programme": '" OR 1=1 --',
        "email": f"nasty-{network.tag}@student-{network.tag}.example.nl",
    }
    async with shared_platform.client(network.keys[school]) as client:
        created = await client.post("/students", json=nasty)
        assert created.status_code == 201, created.text
        back = (await client.get(f"/students/{nasty['student_id']}")).json()
        assert created.headers["content-type"].startswith("application/json")
    for field in ("given_name", "family_name", "programme"):
        assert back[field] == nasty[field]
    assert await shared_platform.rows("members", "SELECT count(*) FROM students")  # the table is still there

    def html_of(message) -> str:
        return message.get_body(preferencelist=("html",)).get_content()

    async def emailed():
        return [m for m in shared_platform.sink.messages if nasty["email"] in str(m["To"])]

    # The emails show the name as text: escaped in the HTML part, wherever it appears.
    await eventually(emailed, timeout_s=60)
    showing = [html_of(m) for m in shared_platform.sink.messages if "DROP TABLE" in html_of(m)]
    assert showing, "the name appears in an email"
    assert all("<script>" not in html for html in showing)


async def _raw_get(gateway: str, raw_path: str, key: str) -> int:
    """The status of a GET sent with its path exactly as written (an HTTP client would normalise `..`)."""
    url = httpx.URL(gateway)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        f"GET {raw_path} HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {key}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


async def test_hostile_input_is_refused_and_the_next_student_still_matches_and_is_emailed(
    shared_platform: Platform, network: Dataset
) -> None:
    """Each hostile input of the trust review, against the platform as processes: each is refused or sent
    safely with its reason, and afterwards an ordinary student still matches and still gets email."""
    platform = shared_platform
    school = network.organisations[0]["organisation_id"]
    company = network.organisations[2]["organisation_id"]
    vacancy = network.vacancies[0]
    async with platform.client(network.keys[company]) as as_company:
        # An 800 KB extra field on a vacancy: refused at the door, never an event too large to publish.
        bloated = {**vacancy, "vacancy_id": f"vac-{network.tag}-bloated", "notes": "é" * 400_000}
        answer = await as_company.post("/vacancies", json=bloated)
        assert answer.status_code == 413 and "bytes" in answer.json()["detail"]
        # An unknown field of ordinary size is named, not dropped.
        answer = await as_company.post("/vacancies", json={**bloated, "notes": "x"})
        assert answer.status_code == 422 and ["body", "notes"] in [e["loc"] for e in answer.json()["detail"]]
    # Dot segments and encoded forms never reach a service's own routes.
    for raw in ("/api/v1/partnerships/../metrics", "/api/v1/partnerships/%2e%2e/metrics", "/api/v1/a%2Fb"):
        assert await _raw_get(platform.gateway, raw, network.keys[company]) == 404, raw
    # 50,000-deep JSON from a partner: rejected on its own topic with the reason, not retried into the DLQ.
    deep = KafkaRecord(
        b"stu-deep",
        b"[" * 50_000 + b"]" * 50_000,
        {
            "ce_specversion": b"1.0",
            "ce_id": f"deep-{network.tag}".encode(),
            "ce_source": f"/partners/{school}".encode(),
            "ce_type": ce_type("student.registered").encode(),
            "content-type": b"application/json",
        },
    )
    await produce(platform.bootstrap, partner_topics(school).ingress, deep)

    async def depth_rejection():
        rejections = await read_topic_to_end(platform.bootstrap, partner_topics(school).rejected)
        return [r for r in rejections if f"deep-{network.tag}".encode() in r.value]

    [rejection] = await eventually(depth_rejection, timeout_s=60)
    assert b"deep" in rejection.value and len(rejection.value) < 10_000
    # A name with a line break and an address on an international domain, then an ordinary student: all
    # three match and get their email.
    template = network.students[0]
    hostile = {
        **template,
        "student_id": f"stu-{network.tag}-crlf",
        "given_name": "Jan\r\nBcc: victim@evil.example",
        "email": f"crlf-{network.tag}@student.example.nl",
    }
    international = {
        **template,
        "student_id": f"stu-{network.tag}-idn",
        "email": f"idn-{network.tag}@bücher.nl",
    }
    ordinary = {
        **template,
        "student_id": f"stu-{network.tag}-next",
        "email": f"next-{network.tag}@student.example.nl",
    }
    async with platform.client(network.keys[company]) as as_company:
        candidates = f"/vacancies/{vacancy['vacancy_id']}/matches"
        before = len((await as_company.get(candidates)).json())
    async with platform.client(network.keys[school]) as as_school:
        for student in (hostile, international, ordinary):
            answer = await as_school.post("/students", json=student)
            assert answer.status_code == 201, answer.text

    def mail_to(address: str):
        return lambda: [m for m in platform.sink.messages if address in str(m["To"])]

    [to_hostile] = await eventually(mail_to(hostile["email"]), timeout_s=90)
    assert "\n" not in str(to_hostile["To"]) and to_hostile["Bcc"] is None
    await eventually(mail_to(f"idn-{network.tag}@xn--bcher-kva.nl"), timeout_s=90)
    await eventually(mail_to(ordinary["email"]), timeout_s=90)
    async with platform.client(network.keys[company]) as as_company:
        after = (await as_company.get(candidates)).json()
    assert len(after) == before + 3  # the three newcomers are among the vacancy's candidates
    assert "Jan Bcc: victim@evil.example" in {c["given_name"].replace("\r\n", " ") for c in after}


async def test_after_erasure_nothing_of_the_student_is_readable_anywhere(
    shared_platform: Platform, network: Dataset
) -> None:
    """A student registered, matched, emailed, dead-lettered and rejected, then erased: none of its personal
    data is readable in any table of any service (outboxes included), any record of any topic, or the log of
    any process."""
    platform = shared_platform
    student = network.students[1]
    school = student["school_id"]
    personal = [student["given_name"], student["family_name"], student["email"]]
    await eventually(
        lambda: [m for m in platform.sink.messages if student["email"] in str(m["To"])], timeout_s=60
    )
    # A dead letter about the student: a copy of its record, as members published it (its fields sealed),
    # made invalid so that the consumers give up on it.
    published = [
        r
        for r in await read_topic_to_end(platform.bootstrap, STUDENTS.name)
        if r.key == student["student_id"].encode()
    ]
    assert published and all(p.encode() not in published[0].value for p in personal)  # sealed on the topic
    broken = json.loads(published[0].value)
    del broken["consent"]
    poison = KafkaRecord(
        published[0].key,
        json.dumps(broken).encode(),
        {k: v for k, v in published[0].headers if k != "ce_id"} | {"ce_id": f"poison-{network.tag}".encode()},
    )
    await produce(platform.bootstrap, STUDENTS.name, poison)
    # A rejection about the student: its school sends an update that is not valid, with its personal data.
    bad_update = Envelope(
        type=ce_type("student.updated"),
        source=f"/partners/{school}",
        subject=student["student_id"],
        data={**student, "level": "mbo-9"},
        id=f"bad-update-{network.tag}",
    )
    await produce(platform.bootstrap, partner_topics(school).ingress, to_binary(bad_update))

    async def dead_lettered() -> bool:
        dlq = await read_topic_to_end(platform.bootstrap, DLQ.name)
        return sum(1 for r in dlq if dict(r.headers).get("ce_id") == f"poison-{network.tag}".encode()) >= 2

    async def rejected() -> bool:
        rejections = await read_topic_to_end(platform.bootstrap, partner_topics(school).rejected)
        return any(bad_update.id.encode() in r.value for r in rejections)

    await eventually(dead_lettered, timeout_s=60)
    await eventually(rejected, timeout_s=60)

    async with platform.client(network.keys[school]) as client:
        assert (await client.delete(f"/students/{student['student_id']}")).status_code == 202

    looked = {"tables": 0, "rows": 0, "topics": 0, "records": 0, "logs": 0}

    async def traces() -> list[str]:
        for key in looked:
            looked[key] = 0
        found = []
        for service in ("members", "matching", "notifications", "gateway"):
            for table in await platform.tables(service):
                looked["tables"] += 1
                for row in await platform.rows(service, f'SELECT * FROM "{table}"'):
                    looked["rows"] += 1
                    text = " ".join(map(str, row))
                    found += [f"{service}.{table}: {p}" for p in personal if p in text]
        for topic in await _topics(platform.bootstrap):
            looked["topics"] += 1
            for record in await read_topic_to_end(platform.bootstrap, topic):
                looked["records"] += 1
                raw = (record.value or b"") + b"".join(v for _, v in record.headers or ())
                found += [f"topic {topic}: {p}" for p in personal if p.encode() in raw]
        for process in [*platform.services.values(), *platform.extra]:
            looked["logs"] += 1
            log = process.log.read_text(errors="replace")
            found += [f"log of {process.name}: {p}" for p in personal if p in log]
        return found

    async def erased() -> bool:
        return not await traces()

    try:
        await eventually(erased, timeout_s=90)
    except AssertionError:
        raise AssertionError(await traces()) from None
    print(
        f"[erasure] nothing of the student in {looked['tables']} tables ({looked['rows']} rows), "
        f"{looked['topics']} topics ({looked['records']} records) and {looked['logs']} process logs"
    )
    assert looked["topics"] >= 10 and looked["tables"] >= 20


async def _topics(bootstrap: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics() if not t.startswith("__"))
    finally:
        await admin.close()
