"""Matching over the real broker, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import inspect, text
from techport_matching.domain import match_id
from techport_shared.envelope import to_binary
from techport_shared.events import ce_type
from techport_shared.identity import organisation
from techport_shared.topics import MATCHES, PARTNERSHIPS, STUDENTS, VACANCIES

from tests.kafka_helpers import produce
from tests.matching.conftest import ALKMAAR, DEN_HELDER, KEY, running_matching, student, uid, vacancy

FOUND, WITHDRAWN = ce_type("match.found"), ce_type("match.withdrawn")


async def _network(matching) -> tuple[str, str]:
    school, company = uid("school"), uid("company")
    await matching.organisation(school, "school")
    await matching.organisation(company, "company")
    return school, company


async def _stored(matching, model, key: str) -> bool:
    async with matching.runtime.sessions() as session:
        return await session.get(model, key) is not None


async def test_student_then_vacancy_and_the_other_order_give_one_explained_match(matching) -> None:
    from techport_matching.store import StudentRow, VacancyRow

    school, company = await _network(matching)
    first_student, first_vacancy = uid("stu"), uid("vac")
    await matching.student(student(first_student, school))
    await matching.wait(lambda: _stored(matching, StudentRow, first_student))
    posted = await matching.vacancy(vacancy(first_vacancy, company), correlationid="corr-hr-42")
    [match] = await matching.events(MATCHES.name, lambda e: e.data.get("vacancy_id") == first_vacancy)

    reasons = match.data["reasons"]
    assert reasons["matched_skills"] == ["safety.gwo.bst", "safety.heights", "elec.troubleshooting"]
    assert reasons["missing_skills"] == ["wind.turbine.maint"]
    assert reasons["preferred_matched"] == ["lang.en"]
    assert 2.0 < reasons["distance_km"] < 2.6
    assert reasons["level_ok"] and reasons["kind_ok"]
    assert 0.74 < match.data["score"] < 0.76  # 3 of 4 required skills
    assert match.data["match_id"] == match_id(first_student, first_vacancy, KEY)
    assert match.data["organisation_id"] == company and match.data["school_id"] == school
    assert match.causationid == posted.id and match.correlationid == "corr-hr-42"
    assert match.subject == first_student  # keyed by student id

    # The other order: the vacancy is known first, the student arrives.
    second_vacancy, second_student = uid("vac"), uid("stu")
    await matching.vacancy(vacancy(second_vacancy, company, required_skills=["safety.gwo.bst"]))
    await matching.wait(lambda: _stored(matching, VacancyRow, second_vacancy))
    registered = await matching.student(student(second_student, school, skills=["safety.gwo.bst"]))
    found = await matching.events(
        MATCHES.name, lambda e: e.data.get("student_id") == second_student, settle_s=2.0
    )
    assert [(e.data["vacancy_id"], e.causationid) for e in found] == [(second_vacancy, registered.id)]
    assert found[0].data["reasons"]["matched_skills"] == ["safety.gwo.bst"] and found[0].data["score"] > 0.99


async def test_redelivery_and_updates_never_match_a_pair_twice(matching) -> None:
    school, company = await _network(matching)
    student_id, vacancy_id = uid("stu"), uid("vac")
    registered = await matching.student(student(student_id, school))
    await matching.vacancy(vacancy(vacancy_id, company))
    await matching.events(MATCHES.name, lambda e: e.data.get("student_id") == student_id)
    await produce(matching.bootstrap, STUDENTS.name, to_binary(registered))  # redelivery
    await matching.student(student(student_id, school, programme="Anders"), type_="student.updated")
    await matching.vacancy(vacancy(vacancy_id, company, title="Nieuwe titel"), type_="vacancy.updated")
    await produce(
        matching.bootstrap, VACANCIES.name, to_binary(registered)
    )  # a student event on the wrong topic
    found = await matching.events(
        MATCHES.name, lambda e: e.data.get("student_id") == student_id, settle_s=3.0
    )
    assert len(found) == 1


async def test_no_match_out_of_range_wrong_level_wrong_kind_or_without_consent(matching) -> None:
    school, company = await _network(matching)
    vacancy_id = uid("vac")
    misfits = {
        uid("far"): student("x", school, location=DEN_HELDER, max_distance_km=40),
        uid("level"): student("x", school, level="hbo-bachelor"),
        uid("kind"): student("x", school, seeking=["job"]),
        uid("consent"): student("x", school, consent={"matching": False, "email": True}),
        uid("skills"): student("x", school, skills=["lang.en", "weld.tig"]),
    }
    fits = uid("fits")
    for student_id, data in misfits.items():
        await matching.student(data | {"student_id": student_id})
    await matching.student(student(fits, school, location=ALKMAAR))  # 21 km, within 25
    await matching.vacancy(vacancy(vacancy_id, company))
    found = await matching.events(
        MATCHES.name, lambda e: e.data.get("vacancy_id") == vacancy_id, settle_s=2.0
    )
    assert [e.data["student_id"] for e in found] == [fits]


async def test_closing_withdraws_and_erasure_withdraws_and_stops_matching(matching) -> None:
    school, company = await _network(matching)
    keeps, erased, vacancy_id = uid("stu"), uid("stu"), uid("vac")
    await matching.student(student(keeps, school))
    await matching.student(student(erased, school, given_name="Xanthippe"))
    await matching.vacancy(vacancy(vacancy_id, company))
    await matching.events(MATCHES.name, lambda e: e.data.get("vacancy_id") == vacancy_id, count=2)

    erasure = await matching.send(STUDENTS.name, "student.erased", {"student_id": erased}, erased)
    [withdrawn] = await matching.events(
        MATCHES.name, lambda e: e.type == WITHDRAWN and e.causationid == erasure.id
    )
    assert withdrawn.data == {"match_id": match_id(erased, vacancy_id, KEY), "reason": "student erased"}
    # A late update does not bring the student back, and a new vacancy does not match them.
    await matching.student(student(erased, school), type_="student.updated")
    later = uid("vac")
    await matching.vacancy(vacancy(later, company))
    found = await matching.events(MATCHES.name, lambda e: e.data.get("vacancy_id") == later, settle_s=2.0)
    assert [e.data["student_id"] for e in found] == [keeps]
    async with matching.runtime.engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        for table in tables:
            rows = (await connection.execute(text(f'SELECT * FROM "{table}"'))).all()
            assert not any("Xanthippe" in str(row) or f"{erased}@" in str(row) for row in rows), table

    closing = await matching.send(
        VACANCIES.name,
        "vacancy.closed",
        {"vacancy_id": vacancy_id, "reason": "filled"},
        vacancy_id,
    )
    [closed] = await matching.events(
        MATCHES.name, lambda e: e.type == WITHDRAWN and e.causationid == closing.id
    )
    assert closed.data == {"match_id": match_id(keeps, vacancy_id, KEY), "reason": "vacancy closed: filled"}
    async with matching.client() as client:
        remaining = (await client.get(f"/students/{keeps}/matches")).json()
    assert [m["vacancy_id"] for m in remaining] == [later]


async def test_the_third_match_proposes_a_partnership_once_and_two_accepts_form_it(matching) -> None:
    school, company = await _network(matching)
    for _ in range(4):
        await matching.student(student(uid("stu"), school))
    await matching.vacancy(vacancy(uid("vac"), company))
    proposed = await matching.events(
        PARTNERSHIPS.name, lambda e: e.data.get("company_id") == company, settle_s=2.0
    )
    assert [e.type for e in proposed] == [ce_type("partnership.proposed")]
    partnership = proposed[0].data
    assert partnership["school_id"] == school and partnership["basis"]["matches"] == 3
    assert "safety.gwo.bst" in partnership["basis"]["shared_skills"]

    async with matching.client(organisation(company)) as as_company:
        listed = (await as_company.get("/partnerships")).json()
        assert [p["partnership_id"] for p in listed] == [partnership["partnership_id"]]
        accepted = await as_company.post(f"/partnerships/{partnership['partnership_id']}/accept")
        assert accepted.json()["status"] == "proposed"
    async with matching.client(organisation(uid("stranger"))) as stranger:
        assert (
            await stranger.post(f"/partnerships/{partnership['partnership_id']}/accept")
        ).status_code == 403
    async with matching.client(organisation(school)) as as_school:
        formed = await as_school.post(f"/partnerships/{partnership['partnership_id']}/accept")
        assert formed.json()["status"] == "formed"
    [event] = await matching.events(
        PARTNERSHIPS.name,
        lambda e: e.type == ce_type("partnership.formed") and e.data.get("company_id") == company,
    )
    assert event.data["partnership_id"] == partnership["partnership_id"]


async def test_an_organisation_proposes_to_another(matching) -> None:
    school, company = await _network(matching)
    await matching.wait(lambda: _known(matching, school))
    await matching.wait(lambda: _known(matching, company))
    async with matching.client(organisation(school)) as as_school:
        response = await as_school.post("/partnerships", json={"company_id": company, "school_id": school})
        assert response.status_code == 201, response.text
        assert response.json()["school_accepted"] and not response.json()["company_accepted"]
        again = await as_school.post("/partnerships", json={"company_id": company, "school_id": school})
        assert again.status_code == 409
        other = await as_school.post("/partnerships", json={"company_id": company, "school_id": uid("x")})
        assert other.status_code == 403


async def _known(matching, organisation_id: str) -> bool:
    from techport_matching.store import OrganisationRow

    async with matching.runtime.sessions() as session:
        return await session.get(OrganisationRow, organisation_id) is not None


async def test_matches_over_http_best_first_and_a_company_sees_no_contact_details(matching) -> None:
    school, company = await _network(matching)
    strong, weak, vacancy_id = uid("stu"), uid("stu"), uid("vac")
    await matching.student(
        student(
            strong,
            school,
            skills=["safety.gwo.bst", "safety.heights", "elec.troubleshooting", "wind.turbine.maint"],
        )
    )
    await matching.student(student(weak, school, skills=["safety.gwo.bst", "safety.heights", "lang.en"]))
    await matching.vacancy(vacancy(vacancy_id, company))
    await matching.events(MATCHES.name, lambda e: e.data.get("vacancy_id") == vacancy_id, count=2)
    async with matching.client(organisation(company)) as as_company:
        candidates = (await as_company.get(f"/vacancies/{vacancy_id}/matches")).json()
        # Under an opaque reference per (vacancy, student), not the student's id.
        assert [c["match_id"] for c in candidates] == [
            match_id(strong, vacancy_id, KEY),
            match_id(weak, vacancy_id, KEY),
        ]
        assert set(candidates[0]) == {
            "match_id", "given_name", "level", "programme", "matched_skills", "distance_km", "score"
        }  # fmt: skip
        assert strong not in str(candidates) and weak not in str(candidates)
        assert all(isinstance(c["distance_km"], int) for c in candidates)  # whole kilometres
        assert (
            "email" not in str(candidates)
            and "postcode" not in str(candidates)
            and "lat" not in str(candidates)
        )
        assert (await as_company.get(f"/students/{strong}/matches")).status_code == 403
    async with matching.client(organisation(school)) as as_school:
        mine = (await as_school.get(f"/students/{strong}/matches")).json()
        assert mine[0]["vacancy_id"] == vacancy_id and mine[0]["reasons"]["missing_skills"] == []
        assert (await as_school.get(f"/vacancies/{vacancy_id}/matches")).status_code == 403


async def test_a_restart_rebuilds_the_index_and_matches_as_before(db_url, kafka_topics) -> None:
    group = uid("matching-restart")
    async with running_matching(db_url, kafka_topics, group) as before:
        school, company = await _network(before)
        students = [uid("stu") for _ in range(3)]
        for student_id in students:
            await before.student(student(student_id, school))
        probe = uid("vac")
        await before.vacancy(vacancy(probe, company))
        first = await before.events(MATCHES.name, lambda e: e.data.get("vacancy_id") == probe, count=3)
        assert before.service.index.stats().students >= 3
    async with running_matching(db_url, kafka_topics, group) as after:
        assert after.service.index.stats().students >= 3  # rebuilt from the database at start
        again = uid("vac")
        await after.vacancy(vacancy(again, company))
        second = await after.events(
            MATCHES.name, lambda e: e.data.get("vacancy_id") == again, count=3, settle_s=1.0
        )
    score = {e.data["student_id"]: e.data["score"] for e in first}
    assert {e.data["student_id"]: e.data["score"] for e in second} == score


async def test_two_replicas_in_one_group_match_against_everything_either_stored(db_url, kafka_topics) -> None:
    """Each replica consumes part of the partitions; its index catches up from the shared database."""
    from contextlib import AsyncExitStack

    group = uid("matching-pair")
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(running_matching(db_url, kafka_topics, group))
        second = await stack.enter_async_context(running_matching(db_url, kafka_topics, group))

        def split() -> bool:
            # Both replicas hold partitions, together all nine (3 topics x 3): the rebalance is over. A
            # test group starts at the end of the topics, so a record sent mid-rebalance could be skipped.
            owned = [
                sub.consumer.assignment() for h in (first, second) for sub in h.runtime.broker.subscribers
            ]
            return all(owned) and len(set().union(*owned)) == 9 and sum(len(o) for o in owned) == 9

        await first.wait(split)
        await first.runtime.wait_for_assignment()
        await second.runtime.wait_for_assignment()
        school, company = await _network(first)
        students = [uid("stu") for _ in range(8)]  # spread over the partitions, so over both replicas
        for student_id in students:
            await first.student(student(student_id, school))

        async def all_stored() -> bool:
            from sqlalchemy import func, select
            from techport_matching.store import StudentRow

            async with first.runtime.sessions() as session:
                count = await session.scalar(
                    select(func.count()).select_from(StudentRow).where(StudentRow.student_id.in_(students))
                )
            return count == len(students)

        await first.wait(all_stored)
        vacancies = [uid("vac") for _ in range(4)]
        for vacancy_id in vacancies:
            await first.vacancy(vacancy(vacancy_id, company))
        found = await first.events(
            MATCHES.name,
            lambda e: e.data.get("vacancy_id") in vacancies,
            count=len(vacancies) * len(students),
            settle_s=2.0,
        )
        pairs = {(e.data["student_id"], e.data["vacancy_id"]) for e in found}
        assert len(pairs) == len(found) == len(vacancies) * len(students)
        handled_by = {first.service.index.stats().students > 0, second.service.index.stats().students > 0}
        assert handled_by == {True}
