"""Through the gateway, over the real broker: register, match, email, erase."""

from __future__ import annotations

import sqlite3

from techport_shared.topics import ORGANISATIONS

from tests.gateway.conftest import eventually
from tests.kafka_helpers import read_topic

SCHOOL = {
    "organisation_id": "nova-e2e",
    "kind": "school",
    "name": "Nova College",
    "email": "info@nova.example.nl",
    "postcode": "1972 AB",
    "city": "IJmuiden",
    "brin_code": "25LH",
}
COMPANY = {
    "organisation_id": "windservice-e2e",
    "kind": "company",
    "name": "Windservice IJmond",
    "kvk_number": "34567890",
    "email": "info@windservice.example.nl",
    "postcode": "1951 AA",
    "city": "Velsen-Noord",
}


async def test_register_match_email_and_erase_through_the_gateway(platform, kafka_topics) -> None:
    def platform_bootstrap() -> str:
        return kafka_topics.kafka_bootstrap_servers

    async with platform.client() as operator:
        school = await operator.post("/organisations", json=SCHOOL, headers={"X-Request-ID": "e2e-school"})
        company = await operator.post("/organisations", json=COMPANY)
    assert school.status_code == company.status_code == 201, (school.text, company.text)
    assert school.headers["X-Request-ID"] == "e2e-school"
    # The request id becomes the correlation id of the events the request caused.
    [registered] = await read_topic(
        platform_bootstrap(),
        ORGANISATIONS.name,
        until=lambda found: len(found) >= 1,
        where=lambda r: r.key == b"nova-e2e",
    )
    assert dict(registered.headers)["ce_correlationid"] == b"e2e-school"
    school_key, company_key = school.json()["api_key"], company.json()["api_key"]

    student = {
        "student_id": "e2e-stu-1",
        "school_id": "nova-e2e",
        "given_name": "Fleur",
        "family_name": "Visser",
        "email": "fleur.visser@student.example.nl",
        "level": "mbo-4",
        "programme": "Monteur mechatronica",
        "skills": ["GWO Basic Safety Training", "Werken op hoogte", "elektrisch storingzoeken", "Engels"],
        "seeking": ["apprenticeship"],
        "postcode": "1972 AB",
        "max_distance_km": 25,
        "consent": {"matching": True, "email": True},
    }
    vacancy = {
        "vacancy_id": "e2e-vac-1",
        "organisation_id": "windservice-e2e",
        "title": "BBL Monteur offshore wind",
        "kind": "apprenticeship",
        "required_skills": ["GWO BST", "werken op hoogte", "elektrisch storingzoeken"],
        "preferred_skills": ["Engels"],
        "levels": ["mbo-3", "mbo-4"],
        "postcode": "1951 AA",
        "positions": 2,
        "starts_on": "2027-03-01",
        "contact_email": "hr@windservice.example.nl",
    }
    async with platform.client(school_key) as as_school:
        assert (await as_school.post("/students", json=student)).status_code == 201
    async with platform.client(company_key) as as_company:
        assert (await as_company.post("/vacancies", json=vacancy)).status_code == 201
    async with platform.client(school_key) as as_school:  # the lists, through the gateway
        mine = (await as_school.get("/students", params={"limit": 10})).json()
        assert [s["student_id"] for s in mine["items"]] == ["e2e-stu-1"] and mine["next_cursor"] is None
        search = {"near": "1972 AB", "radius_km": 10, "skill": "Engels", "organisation_id": "windservice-e2e"}
        found = (await as_school.get("/vacancies", params=search)).json()["items"]
        assert [(v["vacancy_id"], v["distance_km"]) for v in found] == [("e2e-vac-1", 3)]

    async def matched():
        async with platform.client(school_key) as as_school:
            response = await as_school.get("/students/e2e-stu-1/matches")
            return response.json() if response.status_code == 200 and response.json() else None

    [match] = await eventually(matched)
    assert match["vacancy_id"] == "e2e-vac-1" and match["title"] == "BBL Monteur offshore wind"
    assert match["reasons"]["missing_skills"] == [] and match["score"] > 0.99
    async with platform.client(company_key) as as_company:
        [candidate] = (await as_company.get("/vacancies/e2e-vac-1/matches")).json()
        assert candidate["given_name"] == "Fleur" and "email" not in candidate

    async def mailed():
        return [m for m in platform.sink.messages if "fleur.visser@" in str(m["To"])]

    [mail] = await eventually(mailed)
    assert "BBL Monteur offshore wind" in mail.get_body(preferencelist=("plain",)).get_content()
    assert "/api/v1/unsubscribe?token=" in mail["List-Unsubscribe"]

    async with platform.client(school_key) as as_school:
        assert (await as_school.delete("/students/e2e-stu-1")).status_code == 202
        assert (await as_school.get("/students/e2e-stu-1")).status_code == 404

    async def erased_everywhere():
        for name in ("members", "matching", "notifications"):
            if _mentions(platform.databases[name], ["Fleur", "Visser", "fleur.visser@"]):
                return False
        return True

    assert await eventually(erased_everywhere)
    async with platform.client(school_key) as as_school:
        assert (await as_school.get("/students/e2e-stu-1/matches")).status_code == 404


def _mentions(url: str, needles: list[str]) -> list[str]:
    """Every table of a service's SQLite database, read whole: which needles still appear."""
    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        found = []
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in connection.execute(f'SELECT * FROM "{table}"'):
                text = " ".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row)
                found.extend(f"{table}:{n}" for n in needles if n in text)
        return found
    finally:
        connection.close()
