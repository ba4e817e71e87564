"""Members' rules: who may register, change, erase and close what, what a valid record is, and who a
partner event may speak for. No I/O, no HTTP: a rule that is broken raises `Refused` with every problem.

Every state change, whether it came through the API or as a partner event (Kafka or HTTP), is decided here,
so all paths store the same state and emit the same canonical events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from techport_shared.errors import Problem, Refused, refuse_if
from techport_shared.events import (
    OrganisationData,
    StudentData,
    VacancyData,
    ce_type,
    dump,
    revives,
)
from techport_shared.geo import haversine_km
from techport_shared.identity import Identity
from techport_shared.postcodes import lookup
from techport_shared.skills import vocabulary

PARTNER_SOURCE_PREFIX = "/partners/"


@dataclass(frozen=True)
class OrganisationState:
    organisation_id: str
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class StudentState:
    student_id: str
    school_id: str | None
    data: dict[str, Any] | None  # None when only the erased marker remains
    erased_at: datetime | None = None

    @property
    def live(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class VacancyState:
    vacancy_id: str
    organisation_id: str
    status: Literal["open", "closed"]
    data: dict[str, Any]


@dataclass
class Decision:
    """What to store and which events to emit (type, data)."""

    data: dict[str, Any] | None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    created: bool = False
    unknown_skills: int = 0


def partner_source_problems(actor: Identity, source: str | None) -> list[Problem]:
    """A partner event speaks for the organisation whose credential sent it, and its `ce_source` must say
    so: `/partners/<that organisation's id>`. Anything else is refused (contract section 1)."""
    if source is None:
        return []
    if actor.organisation_id is None or source != f"{PARTNER_SOURCE_PREFIX}{actor.organisation_id}":
        return [
            Problem(
                "ce_source",
                f"must be {PARTNER_SOURCE_PREFIX}{actor.organisation_id}: the organisation whose credential "
                "sent it",
                "forbidden",
            )
        ]
    return []


def _located(model: BaseModel, problems: list[Problem]) -> dict[str, Any]:
    """Canonical data: the location from the event, else from the postcode (a Dutch one we know)."""
    data = dump(model)
    area = lookup(data["postcode"])
    if area is None:
        problems.append(Problem("postcode", "is not a Dutch postcode we know"))
    elif data.get("location") is None:
        data["location"] = {"lat": area.lat, "lon": area.lon}
    return data


def _normalise_skills(data: dict[str, Any], *fields: str) -> int:
    unknown = 0
    for name in fields:
        skills = vocabulary().normalise_all(data.get(name) or [])
        data[name] = [skill.code for skill in skills]
        unknown += sum(not skill.known for skill in skills)
    return unknown


def register_organisation(
    actor: Identity, model: OrganisationData, existing: OrganisationState | None
) -> Decision:
    problems: list[Problem] = []
    if not actor.acts_for(model.organisation_id):
        problems.append(
            Problem("organisation_id", "only an operator registers other organisations", "forbidden")
        )
    elif existing is None and not actor.is_operator:
        problems.append(
            Problem("organisation_id", "only an operator registers new organisations", "forbidden")
        )
    if existing is not None and existing.kind != model.kind:
        problems.append(
            Problem("kind", f"is {existing.kind}; an organisation does not change kind", "conflict")
        )
    data = _located(model, problems)
    refuse_if(problems)
    if existing is not None and existing.data == data:
        return Decision(data)  # a resend of what we have: nothing changes, nothing is emitted
    action = "organisation.registered" if existing is None else "organisation.updated"
    return Decision(data, [(ce_type(action), data)], created=existing is None)


def register_student(
    actor: Identity,
    model: StudentData,
    existing: StudentState | None,
    school: OrganisationState | None,
    occurred_at: datetime,
    must_exist: bool = False,
) -> Decision:
    """Register a student, or update one registered by the same school (so partners can resend safely)."""
    problems: list[Problem] = []
    if model.school_id is None:
        if not actor.is_operator:
            problems.append(
                Problem("school_id", "only an operator registers a student without a school", "forbidden")
            )
    else:
        if school is None:
            problems.append(Problem("school_id", f"unknown organisation {model.school_id}", "invalid"))
        elif school.kind != "school":
            problems.append(
                Problem("school_id", f"{model.school_id} is a {school.kind}, not a school", "invalid")
            )
        if not actor.acts_for(model.school_id):
            problems.append(
                Problem("school_id", "a school registers and changes only its own students", "forbidden")
            )
    live = existing is not None and existing.live
    if live and existing is not None and existing.school_id != model.school_id and not actor.is_operator:
        problems.append(Problem("student_id", "registered by another school", "conflict"))
    if existing is not None and not existing.live:
        if must_exist:
            problems.append(Problem("student_id", "the student was erased", "not_found"))
        elif existing.erased_at is not None and not revives(
            ce_type("student.registered"), occurred_at, existing.erased_at
        ):
            problems.append(
                Problem("student_id", "the student was erased after this registration", "conflict")
            )
    elif must_exist and not live:
        problems.append(Problem("student_id", f"unknown student {model.student_id}", "not_found"))
    data = _located(model, problems)
    refuse_if(problems)
    unknown = _normalise_skills(data, "skills")
    if live and existing is not None and existing.data == data:
        return Decision(data, unknown_skills=unknown)
    action = "student.updated" if live else "student.registered"
    return Decision(data, [(ce_type(action), data)], created=not live, unknown_skills=unknown)


def erase_student(actor: Identity, existing: StudentState | None, student_id: str) -> Decision:
    if existing is None or not existing.live:
        raise Refused.of("not_found", "student_id", f"unknown student {student_id}")
    if not actor.acts_for(existing.school_id):
        raise Refused.of("forbidden", "student_id", "a school erases only its own students")
    return Decision(None, [(ce_type("student.erased"), {"student_id": student_id})])


def post_vacancy(
    actor: Identity,
    model: VacancyData,
    existing: VacancyState | None,
    company: OrganisationState | None,
    must_exist: bool = False,
) -> Decision:
    problems: list[Problem] = []
    if company is None:
        problems.append(Problem("organisation_id", f"unknown organisation {model.organisation_id}"))
    elif company.kind != "company":
        problems.append(
            Problem("organisation_id", f"{model.organisation_id} is a {company.kind}, not a company")
        )
    if not actor.acts_for(model.organisation_id):
        problems.append(
            Problem("organisation_id", "a company posts and closes only its own vacancies", "forbidden")
        )
    if existing is not None:
        if existing.organisation_id != model.organisation_id:
            problems.append(Problem("vacancy_id", "posted by another organisation", "conflict"))
        elif existing.status == "closed":
            problems.append(Problem("vacancy_id", "the vacancy is closed", "conflict"))
    elif must_exist:
        problems.append(Problem("vacancy_id", f"unknown vacancy {model.vacancy_id}", "not_found"))
    data = _located(model, problems)
    refuse_if(problems)
    unknown = _normalise_skills(data, "required_skills", "preferred_skills")
    if existing is not None and existing.data == data:
        return Decision(data, unknown_skills=unknown)
    action = "vacancy.posted" if existing is None else "vacancy.updated"
    return Decision(data, [(ce_type(action), data)], created=existing is None, unknown_skills=unknown)


def close_vacancy(actor: Identity, existing: VacancyState | None, vacancy_id: str, reason: str) -> Decision:
    if existing is None:
        raise Refused.of("not_found", "vacancy_id", f"unknown vacancy {vacancy_id}")
    if not actor.acts_for(existing.organisation_id):
        raise Refused.of("forbidden", "vacancy_id", "a company closes only its own vacancies")
    if existing.status == "closed":
        return Decision(existing.data)  # closing twice changes nothing
    return Decision(
        existing.data, [(ce_type("vacancy.closed"), {"vacancy_id": vacancy_id, "reason": reason})]
    )


@dataclass(frozen=True)
class VacancySearch:
    """What a vacancy search asks (`GET /vacancies`): each criterion given must hold. A vacancy that names
    no levels is open to every level; `skill` is a skill's code, wanted or required; `near` (lat, lon) with
    `radius_km` is a circle the vacancy's place must lie in."""

    kind: str | None = None
    level: str | None = None
    skill: str | None = None
    near: tuple[float, float] | None = None
    radius_km: float = 25.0

    def fits(self, data: dict[str, Any]) -> tuple[bool, float | None]:
        """Whether the vacancy fits, and how far it is from `near` (None without `near`)."""
        if self.kind is not None and data.get("kind") != self.kind:
            return False, None
        levels = data.get("levels") or []
        if self.level is not None and levels and self.level not in levels:
            return False, None
        skills = [*(data.get("required_skills") or []), *(data.get("preferred_skills") or [])]
        if self.skill is not None and self.skill not in skills:
            return False, None
        if self.near is None:
            return True, None
        place = data.get("location")
        if not place:  # no place to measure from: outside every circle
            return False, None
        distance = haversine_km(self.near[0], self.near[1], place["lat"], place["lon"])
        return distance <= self.radius_km, distance
