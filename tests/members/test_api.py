"""Members' HTTP API: ownership, errors, updates, erasure."""

from __future__ import annotations

from sqlalchemy import inspect, text
from techport_shared.events import ce_type
from techport_shared.identity import organisation
from techport_shared.topics import STUDENTS, VACANCIES

from tests.members.conftest import organisation_data, student_data, uid, vacancy_data


async def test_a_request_without_a_valid_identity_is_refused(members) -> None:
    async with members.client(identity=None) as client:
        assert (await client.get("/organisations/x")).status_code == 401
        response = await client.post(
            "/students", json=student_data("s", None), headers={"X-Techport-Identity": "forged"}
        )
        assert response.status_code == 401
    assert (await members.client().__aenter__()).headers  # the operator's client carries a token


async def test_validation_errors_are_422_with_every_field(members) -> None:
    school, _ = await members.setup_network()
    async with members.client(organisation(school)) as client:
        body = student_data(uid("stu"), school, level="mbo-9", seeking=[], email="nope", postcode="ABC")
        response = await client.post("/students", json=body)
    assert response.status_code == 422
    fields = {tuple(item["loc"][1:]) for item in response.json()["detail"]}
    assert {("level",), ("seeking",), ("email",), ("postcode",)} <= fields


async def test_unknown_postcode_and_school_are_422_naming_the_field(members) -> None:
    async with members.client() as client:
        response = await client.post(
            "/students", json=student_data(uid("stu"), "no-school", postcode="1000AA")
        )
    assert response.status_code == 422
    assert {item["loc"][-1] for item in response.json()["detail"]} == {"postcode", "school_id"}


async def test_ownership_rules(members) -> None:
    school, company = await members.setup_network()
    other_school, other_company = await members.setup_network()
    student_id, vacancy_id = uid("stu"), uid("vac")
    async with members.client(organisation(school)) as as_school:
        assert (await as_school.post("/students", json=student_data(student_id, school))).status_code == 201
        # Another school's student: 403. Registering its own again: an update (200).
        assert (
            await as_school.post("/students", json=student_data(uid("stu"), other_school))
        ).status_code == 403
        again = await as_school.post(
            "/students", json=student_data(student_id, school, programme="Mechatronica")
        )
        assert again.status_code == 200 and again.json()["programme"] == "Mechatronica"
        # A school may not post vacancies, nor register organisations.
        assert (await as_school.post("/vacancies", json=vacancy_data(uid("vac"), company))).status_code == 403
        assert (
            await as_school.post("/organisations", json=organisation_data(uid("x"), "school"))
        ).status_code == 403
    async with members.client(organisation(other_school)) as as_other:
        # The id is taken by another school: 409; reading or erasing it: 403.
        assert (
            await as_other.post("/students", json=student_data(student_id, other_school))
        ).status_code == 409
        assert (await as_other.get(f"/students/{student_id}")).status_code == 403
        assert (await as_other.delete(f"/students/{student_id}")).status_code == 403
        assert (await as_other.patch(f"/students/{student_id}", json={"level": "mbo-2"})).status_code == 403
    async with members.client(organisation(company)) as as_company:
        assert (
            await as_company.post("/vacancies", json=vacancy_data(vacancy_id, company))
        ).status_code == 201
        assert (await as_company.get(f"/students/{student_id}")).status_code == 403
    async with members.client(organisation(other_company)) as as_other_company:
        assert (
            await as_other_company.post("/vacancies", json=vacancy_data(vacancy_id, other_company))
        ).status_code == 409
        assert (
            await as_other_company.post(f"/vacancies/{vacancy_id}/close", json={"reason": "filled"})
        ).status_code == 403
    async with members.client() as operator:
        assert (await operator.get("/students/nobody")).status_code == 404
        assert (await operator.get("/vacancies/nothing")).status_code == 404
        assert (await operator.get("/organisations/no-org")).status_code == 404
        assert (await operator.get(f"/students/{student_id}")).status_code == 200


async def test_patch_updates_and_close_withdraws(members) -> None:
    school, company = await members.setup_network()
    student_id, vacancy_id = uid("stu"), uid("vac")
    async with members.client(organisation(school)) as as_school:
        await as_school.post("/students", json=student_data(student_id, school))
        response = await as_school.patch(
            f"/students/{student_id}", json={"skills": ["CNC frezen"], "level": "mbo-3"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["skills"] == ["cnc.milling"] and response.json()["level"] == "mbo-3"
        bad = await as_school.patch(f"/students/{student_id}", json={"max_distance_km": -5})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "max_distance_km"
    async with members.client(organisation(company)) as as_company:
        await as_company.post("/vacancies", json=vacancy_data(vacancy_id, company))
        closed = await as_company.post(f"/vacancies/{vacancy_id}/close", json={"reason": "filled"})
        assert closed.status_code == 200 and closed.json()["status"] == "closed"
        again = await as_company.post(f"/vacancies/{vacancy_id}/close", json={"reason": "filled"})
        assert again.status_code == 200  # closing twice changes nothing
        repost = await as_company.post("/vacancies", json=vacancy_data(vacancy_id, company))
        assert repost.status_code == 409
    student_events = await members.events(STUDENTS.name, lambda e: e.subject == student_id, count=2)
    assert [e.type for e in student_events] == [ce_type("student.registered"), ce_type("student.updated")]
    vacancy_events = await members.events(
        VACANCIES.name, lambda e: e.subject == vacancy_id, count=2, settle_s=1.5
    )
    assert [e.type for e in vacancy_events] == [ce_type("vacancy.posted"), ce_type("vacancy.closed")]
    assert vacancy_events[1].data == {"vacancy_id": vacancy_id, "reason": "filled"}


async def test_erasure_leaves_no_personal_data_in_any_table(members) -> None:
    school, _ = await members.setup_network()
    student_id = uid("stu")
    personal = student_data(
        student_id,
        school,
        given_name="Xanthippe",
        family_name="Zwartkruis",
        email=f"{student_id}@mail.example.nl",
    )
    async with members.client(organisation(school)) as as_school:
        assert (await as_school.post("/students", json=personal)).status_code == 201
        await members.events(STUDENTS.name, lambda e: e.subject == student_id)  # published from the outbox
        response = await as_school.delete(f"/students/{student_id}")
        assert response.status_code == 202
        assert (await as_school.get(f"/students/{student_id}")).status_code == 404
        assert (await as_school.patch(f"/students/{student_id}", json={"level": "mbo-2"})).status_code == 404
    [erased] = await members.events(
        STUDENTS.name, lambda e: e.subject == student_id and e.type == ce_type("student.erased")
    )
    assert erased.data == {"student_id": student_id}

    needles = ["Xanthippe", "Zwartkruis", f"{student_id}@mail.example.nl", "1972 AB", "1972ab", "52.459"]
    async with members.runtime.engine.connect() as connection:
        table_names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        assert {"students", "erased_students", "outbox", "processed_messages"} <= set(table_names)
        for table in table_names:
            for row in (await connection.execute(text(f'SELECT * FROM "{table}"'))).all():
                flat = " ".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row)
                found = [needle for needle in needles if needle in flat]
                assert not found, f"{table} still holds {found}"
    # A late partner update cannot bring the student back; a new registration by the school can.
    async with members.client(organisation(school)) as as_school:
        again = await as_school.post("/students", json=personal)
        assert again.status_code == 201
