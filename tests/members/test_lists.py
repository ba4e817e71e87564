"""Lists and searches (contract section 5): pages of at most `limit`, an opaque cursor to the next, each
caller seeing only what is theirs (a school its students, an organisation itself), every key searching
vacancies."""

from __future__ import annotations

from typing import Any

import httpx
from techport_shared.identity import organisation

from tests.members.conftest import organisation_data, student_data, uid, vacancy_data


async def _all_pages(client: httpx.AsyncClient, path: str, **params: Any) -> tuple[list[dict], int]:
    """Every item of a list, following its cursors; and how many pages that took."""
    items: list[dict] = []
    pages, cursor = 0, None
    while True:
        response = await client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= params.get("limit", 50)
        items += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages


async def test_a_school_pages_through_its_own_students_and_no_one_elses(members) -> None:
    school, company = await members.setup_network()
    other_school = uid("school")
    async with members.client() as operator:
        await operator.post("/organisations", json=organisation_data(other_school, "school"))
    ours = sorted(uid("stu") for _ in range(5))
    theirs = [uid("stu") for _ in range(2)]
    async with members.client(organisation(school)) as as_school:
        for student_id in ours:
            assert (
                await as_school.post("/students", json=student_data(student_id, school))
            ).status_code == 201
    async with members.client(organisation(other_school)) as as_other:
        for student_id in theirs:
            await as_other.post("/students", json=student_data(student_id, other_school))
    erased = ours.pop()
    async with members.client(organisation(school)) as as_school:
        assert (await as_school.delete(f"/students/{erased}")).status_code == 202

        items, pages = await _all_pages(as_school, "/students", limit=2)
        assert [s["student_id"] for s in items] == ours  # its own, in id order, each once, not the erased
        assert pages == 2 and items[0]["email"] == f"{ours[0]}@student.example.nl"
        named, _ = await _all_pages(as_school, "/students", school_id=school, limit=200)
        assert [s["student_id"] for s in named] == ours
        assert (await as_school.get("/students", params={"school_id": other_school})).status_code == 403
        assert (await as_school.get("/students", params={"limit": 201})).status_code == 422
        forged = await as_school.get("/students", params={"cursor": "not-a-cursor"})
        assert forged.status_code == 422 and forged.json()["detail"][0]["loc"] == ["query", "cursor"]
    async with members.client(organisation(company)) as as_company:
        assert (await as_company.get("/students")).status_code == 403
    async with members.client() as operator:
        everyone, _ = await _all_pages(operator, "/students", limit=200)
        listed = {s["student_id"] for s in everyone}
        assert set(ours) | set(theirs) <= listed and erased not in listed
        theirs_only, _ = await _all_pages(operator, "/students", school_id=other_school)
        assert sorted(s["student_id"] for s in theirs_only) == sorted(theirs)


async def test_organisations_are_listed_for_operators_and_each_sees_itself(members) -> None:
    school, company = await members.setup_network()
    async with members.client() as operator:
        schools, _ = await _all_pages(operator, "/organisations", kind="school", limit=3)
        ids = [o["organisation_id"] for o in schools]
        assert school in ids and company not in ids and ids == sorted(ids)
        assert (await operator.get("/organisations", params={"kind": "farm"})).status_code == 422
    async with members.client(organisation(company)) as as_company:
        itself = (await as_company.get("/organisations")).json()
        assert [o["organisation_id"] for o in itself["items"]] == [company]
        assert itself["items"][0]["ingress_topic"] and itself["next_cursor"] is None


async def test_every_key_searches_vacancies_by_kind_level_skill_place_and_status(members) -> None:
    school, company = await members.setup_network()
    other = uid("company")
    async with members.client() as operator:
        await operator.post("/organisations", json=organisation_data(other, "company"))
    wind, intern, groningen, any_level = (uid("vac") for _ in range(4))
    async with members.client(organisation(company)) as as_company:
        for vacancy in (
            vacancy_data(wind, company),  # 1976 BD (IJmuiden), apprenticeship, mbo-3/4, English preferred
            vacancy_data(intern, company, kind="internship", levels=["hbo-bachelor"], preferred_skills=[]),
            vacancy_data(groningen, company, postcode="9711 AA"),
            vacancy_data(any_level, company, levels=[], required_skills=["TIG-lassen"], preferred_skills=[]),
        ):
            assert (await as_company.post("/vacancies", json=vacancy)).status_code == 201
        await as_company.post(f"/vacancies/{any_level}/close", json={"reason": "filled"})

    async def found(**params: Any) -> list[str]:
        async with members.client(organisation(school)) as as_school:  # any key may search
            items, _ = await _all_pages(as_school, "/vacancies", organisation_id=company, **params)
        return [v["vacancy_id"] for v in items]

    assert await found() == sorted([wind, intern, groningen])  # open ones, in id order
    assert await found(kind="internship") == [intern]
    assert await found(level="mbo-4") == sorted([wind, groningen])
    assert await found(skill="Engels") == sorted([wind, groningen])  # a label finds its skill's code
    assert await found(near="1971 AB", radius_km=10) == sorted([wind, intern])
    assert await found(status="closed") == [any_level]
    assert await found(status="closed", level="mbo-1", skill="TIG-lassen") == [any_level]  # no levels: any
    assert await found(limit=1) == sorted([wind, intern, groningen])
    async with members.client(organisation(other)) as as_other:
        params = {"near": "1971 AB", "radius_km": 10, "organisation_id": company}
        near = (await as_other.get("/vacancies", params=params)).json()
        mine = [v for v in near["items"] if v["vacancy_id"] == wind]
        assert mine and mine[0]["distance_km"] == 3  # 2.8 km, in whole kilometres
        unknown = await as_other.get("/vacancies", params={"near": "0000 XX"})
        assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["query", "near"]
        bad = await as_other.get("/vacancies", params={"radius_km": 0, "level": "mbo-9"})
        assert bad.status_code == 422
        assert {tuple(d["loc"]) for d in bad.json()["detail"]} == {("query", "radius_km"), ("query", "level")}


async def test_a_search_few_vacancies_fit_reads_a_bounded_stretch_a_page(members, monkeypatch) -> None:
    """A page reads at most SEARCH_READ_AT_MOST vacancies: where none of them fits, the page is empty and
    its cursor goes on from the last one read, so no request reads the whole table."""
    from techport_members import api

    _, company = await members.setup_network()
    ids = sorted(uid("vac") for _ in range(5))
    async with members.client(organisation(company)) as as_company:
        for n, vacancy_id in enumerate(ids):
            kind = "job" if n == len(ids) - 1 else "apprenticeship"  # only the last one fits
            await as_company.post("/vacancies", json=vacancy_data(vacancy_id, company, kind=kind))
        monkeypatch.setattr(api, "SEARCH_READ_AT_MOST", 2)
        monkeypatch.setattr(api, "SEARCH_CHUNK", 1)
        pages = []
        cursor = None
        while True:
            params = {"organisation_id": company, "kind": "job", **({"cursor": cursor} if cursor else {})}
            page = (await as_company.get("/vacancies", params=params)).json()
            pages.append([v["vacancy_id"] for v in page["items"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert pages == [[], [], [ids[-1]]]  # two stretches of two read, then the last one and the end
