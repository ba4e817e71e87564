"""One pydantic model per event type of the contract (section 1), and the registry from `ce_type` to model.

The models check shape and format (ids, postcodes, levels, dates, e-mail) and every bound of the contract's
limits: string and list lengths, and a few bounded extra fields (a v2 of a type may add optional ones), so
the JSON Schemas in docs/schemas/ say them too. Rules that need state (does the school exist, is this
postcode known) belong to the services.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from email_validator.rfc_constants import DOMAIN_MAX_LENGTH, EMAIL_MAX_LENGTH, LOCAL_PART_MAX_LENGTH
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.networks import validate_email

from techport_shared.limits import (
    MAX_FIELD_CHARS,
    MAX_LISTED_ERRORS,
    MAX_MESSAGE_CHARS,
    capped,
    depth_of,
    plain_text,
)
from techport_shared.postcodes import POSTCODE_PATTERN, normalise_postcode

TYPE_PREFIX = "nl.techport."
STUDENT_TYPES = f"{TYPE_PREFIX}student."  # what every student event's type starts with

EntityId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Level = Literal[
    "mbo-1", "mbo-2", "mbo-3", "mbo-4", "hbo-ad", "hbo-bachelor", "hbo-master", "wo-bachelor", "wo-master"
]
LEVELS: tuple[str, ...] = Level.__args__  # type: ignore[attr-defined]
Seeking = Literal["internship", "apprenticeship", "job", "traineeship"]
KINDS: tuple[str, ...] = Seeking.__args__  # type: ignore[attr-defined]
OrganisationKind = Literal["company", "school", "government"]
Language = Literal["nl", "en"]
Text = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(plain_text)]
LongText = Annotated[str, Field(max_length=10_000), AfterValidator(plain_text)]
SkillText = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(plain_text)]
KvkNumber = Annotated[str, Field(pattern=r"^[0-9]{8}$")]  # Chamber of Commerce number
BrinCode = Annotated[str, Field(pattern=r"^[0-9A-Za-z]{4}$")]  # a school's code with DUO
Crebo = Annotated[str, Field(pattern=r"^[0-9]{5}$")]  # an MBO programme's code


# The common address (ASCII, dot-atom local part, host name labels, a letters-only top-level domain) is
# checked by a pattern: email-validator's full check (pydantic's EmailStr) was a tenth of handling a student
# event. The pattern accepts only what email-validator accepts, and gives what it normalises to (the domain in
# lower case): tests/shared/test_email_check.py holds the two to each other. Anything else: the full check.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_EMAIL = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")


def plain_email(value: str) -> str | None:
    """`value` normalised if it is a plain address email-validator accepts, else None (not known here)."""
    found = _PLAIN_EMAIL.fullmatch(value)
    if found is None or len(value) > EMAIL_MAX_LENGTH or "--" in value:
        return None
    local, domain = found.groups()
    domain = domain.lower()
    if (
        len(local) > LOCAL_PART_MAX_LENGTH
        or len(domain) > DOMAIN_MAX_LENGTH
        or domain.rsplit(".", 1)[-1] in SPECIAL_USE_DOMAIN_NAMES  # refused by email-validator
    ):
        return None
    return f"{local}@{domain}"


@functools.lru_cache(maxsize=4096)
def _checked_email(value: str) -> str:
    return validate_email(value)[1]


def _email(value: str) -> str:
    # Anything unusual takes pydantic's own check (email-validator, no DNS); the recent ones are remembered.
    return plain_email(value) or _checked_email(value)


Email = Annotated[str, AfterValidator(_email), WithJsonSchema({"type": "string", "format": "email"})]


def _postcode(value: str) -> str:
    if not re.fullmatch(POSTCODE_PATTERN, value.strip()):
        raise ValueError("not a Dutch postcode (four digits and two letters, e.g. 1971 AB)")
    return normalise_postcode(value)


Postcode = Annotated[str, AfterValidator(_postcode)]


# Unknown fields are allowed, because a v2 of a type may add optional fields (contract section 1), but only a
# few, and each small: 800 KB of "extra" must not ride along into our events.
MAX_EXTRA_FIELDS = 16
MAX_EXTRA_BYTES = 2048
_EXTRA_DEPTH = 3


def _bounded_extra(value: JsonValue) -> JsonValue:
    if depth_of(value) > _EXTRA_DEPTH:
        raise ValueError(f"an extra field nests at most {_EXTRA_DEPTH} deep")
    if len(json.dumps(value, ensure_ascii=False).encode()) > MAX_EXTRA_BYTES:
        raise ValueError(f"an extra field is at most {MAX_EXTRA_BYTES} bytes as JSON")
    return value


ExtraValue = Annotated[
    JsonValue,
    AfterValidator(_bounded_extra),
    WithJsonSchema(
        {"description": f"Any JSON value of at most {MAX_EXTRA_BYTES} bytes, {_EXTRA_DEPTH} deep"}
    ),
]


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)
    __pydantic_extra__: dict[str, ExtraValue] = Field(init=False)

    @model_validator(mode="before")
    @classmethod
    def _few_extra_fields(cls, value: Any) -> Any:
        if isinstance(value, dict):
            extra = len(value.keys() - cls.model_fields.keys())
            if extra > MAX_EXTRA_FIELDS:
                raise ValueError(f"{extra} unknown fields; at most {MAX_EXTRA_FIELDS} are accepted")
        return value

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
        schema = handler(core_schema)
        schema = handler.resolve_ref_schema(schema)
        schema["maxProperties"] = len(cls.model_fields) + MAX_EXTRA_FIELDS
        return schema


class Location(_Data):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class Consent(_Data):
    matching: bool
    email: bool


class OrganisationData(_Data):
    organisation_id: EntityId
    kind: OrganisationKind
    name: Text
    email: Email
    postcode: Postcode
    city: Text
    location: Location | None = None
    kvk_number: KvkNumber | None = None
    brin_code: BrinCode | None = None
    accredited_training_company: bool | None = None
    sectors: list[Text] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _identifiers_fit_kind(self) -> OrganisationData:
        if self.kvk_number is not None and self.kind != "company":
            raise ValueError("kvk_number is for companies")
        if self.brin_code is not None and self.kind != "school":
            raise ValueError("brin_code is for schools")
        return self


class OrganisationRegistered(OrganisationData):
    pass


class OrganisationUpdated(OrganisationData):
    pass


class _StudentProfile(_Data):
    """What a student event says that is not personal: in the clear on every topic."""

    student_id: EntityId
    school_id: EntityId | None
    level: Level
    programme: Text
    crebo: Crebo | None = None
    skills: list[SkillText] = Field(default_factory=list, max_length=200)
    seeking: list[Seeking] = Field(min_length=1, max_length=4)
    max_distance_km: float = Field(default=25, gt=0, le=500)
    available_from: date | None = None
    preferred_language: Language = "nl"
    consent: Consent


class StudentData(_StudentProfile):
    given_name: Text
    family_name: Text
    email: Email
    postcode: Postcode
    location: Location | None = None


# The fields sealed under the student's key on the platform's own topics (sealing.py): what `StudentData`
# adds to the profile.
PERSONAL_FIELDS = tuple(name for name in StudentData.model_fields if name not in _StudentProfile.model_fields)


class StudentRegistered(StudentData):
    pass


class StudentUpdated(StudentData):
    pass


class SealedFields(BaseModel):
    """A student's personal fields, sealed under the student's key (sealing.py): AES-256-GCM."""

    v: Literal[1]
    alg: Literal["A256GCM"]
    kid: Annotated[str, Field(max_length=40)]
    nonce: Annotated[str, Field(max_length=24)]
    ct: Annotated[str, Field(max_length=8192)]


class SealedStudent(_StudentProfile):
    """`student.registered` / `student.updated` as members publishes them on `techport.students.v1`: the
    personal fields (given_name, family_name, email, postcode, location) are in `sealed`; erasure destroys
    the key, and every copy becomes unreadable."""

    sealed: SealedFields


class StudentErased(_Data):
    student_id: EntityId


VacancyKind = Seeking


class VacancyData(_Data):
    vacancy_id: EntityId
    organisation_id: EntityId
    title: Text
    description: LongText = ""
    kind: VacancyKind
    # At most 30 required skills: matching's score relies on it (coverage steps outweigh tiebreaks).
    required_skills: list[SkillText] = Field(default_factory=list, max_length=30)
    preferred_skills: list[SkillText] = Field(default_factory=list, max_length=100)
    levels: list[Level] = Field(default_factory=list, max_length=len(LEVELS))
    postcode: Postcode
    location: Location | None = None
    positions: int = Field(ge=1, le=10_000)
    hours_per_week: float | None = Field(default=None, gt=0, le=80)
    starts_on: date
    closes_on: date | None = None
    contact_email: Email


class VacancyPosted(VacancyData):
    pass


class VacancyUpdated(VacancyData):
    pass


class VacancyClosed(_Data):
    vacancy_id: EntityId
    reason: Literal["filled", "withdrawn", "expired"]


class FieldError(_Data):
    field: Annotated[str, Field(max_length=MAX_FIELD_CHARS)]
    message: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]


# What a partner sent, echoed in its rejection: bounded, whatever the partner sent.
Echoed = Annotated[str, Field(max_length=300)]


class IngressRejected(_Data):
    ce_id: Echoed
    ce_type: Echoed
    ce_source: Echoed
    errors: list[FieldError] = Field(min_length=1, max_length=MAX_LISTED_ERRORS)
    # How many errors were found; `errors` lists the first MAX_LISTED_ERRORS of them.
    error_count: int = Field(default=0, ge=0)

    @classmethod
    def of(cls, ce_id: str, ce_type: str, ce_source: str, errors: list[dict[str, str]]) -> IngressRejected:
        """A rejection bounded by construction: errors capped with their count, echoed values trimmed."""
        listed, count = capped(errors)
        return cls(
            ce_id=trim_echo(ce_id),
            ce_type=trim_echo(ce_type),
            ce_source=trim_echo(ce_source),
            errors=[FieldError(**e) for e in listed],
            error_count=count,
        )


def trim_echo(value: str) -> str:
    return value[:300]


SkillCode = Annotated[str, Field(max_length=120)]


class MatchReasons(_Data):
    matched_skills: list[SkillCode] = Field(max_length=30)
    missing_skills: list[SkillCode] = Field(max_length=30)
    preferred_matched: list[SkillCode] = Field(max_length=100)
    distance_km: float | None
    level_ok: bool
    kind_ok: bool


class MatchFound(_Data):
    match_id: EntityId
    student_id: EntityId
    vacancy_id: EntityId
    organisation_id: EntityId
    school_id: EntityId | None
    score: float = Field(ge=0, le=1)
    reasons: MatchReasons


class MatchWithdrawn(_Data):
    match_id: EntityId
    reason: Text


class PartnershipBasis(_Data):
    matches: int = Field(ge=0)
    shared_skills: list[SkillCode] = Field(max_length=25)


class PartnershipProposed(_Data):
    partnership_id: EntityId
    company_id: EntityId
    school_id: EntityId
    basis: PartnershipBasis


class PartnershipFormed(_Data):
    partnership_id: EntityId
    company_id: EntityId
    school_id: EntityId
    formed_at: datetime


RecipientKind = Literal["student", "organisation", "vacancy_contact"]
# One email reports on at most this many events (a bigger digest goes out in parts).
MAX_DIGEST_ITEMS = 100


class NotificationData(_Data):
    notification_id: EntityId
    channel: Literal["email"] = "email"
    recipient_id: EntityId
    # Which kind of entity `recipient_id` names: ids of different kinds may look alike.
    recipient_kind: RecipientKind | None = None
    template: Annotated[str, Field(max_length=40)]
    about: list[Annotated[str, Field(max_length=200)]] = Field(max_length=MAX_DIGEST_ITEMS)


class NotificationSent(NotificationData):
    pass


class NotificationSuppressed(NotificationData):
    reason: Text | None = None


class NotificationFailed(NotificationData):
    error: Annotated[str, Field(max_length=1000)]


def ce_type(entity_action: str) -> str:
    """`student.registered` -> `nl.techport.student.registered.v1`."""
    return f"{TYPE_PREFIX}{entity_action}.v1"


EVENT_MODELS: dict[str, type[BaseModel]] = {
    ce_type("organisation.registered"): OrganisationRegistered,
    ce_type("organisation.updated"): OrganisationUpdated,
    ce_type("student.registered"): StudentRegistered,
    ce_type("student.updated"): StudentUpdated,
    ce_type("student.erased"): StudentErased,
    ce_type("vacancy.posted"): VacancyPosted,
    ce_type("vacancy.updated"): VacancyUpdated,
    ce_type("vacancy.closed"): VacancyClosed,
    ce_type("ingress.rejected"): IngressRejected,
    ce_type("match.found"): MatchFound,
    ce_type("match.withdrawn"): MatchWithdrawn,
    ce_type("partnership.proposed"): PartnershipProposed,
    ce_type("partnership.formed"): PartnershipFormed,
    ce_type("notification.sent"): NotificationSent,
    ce_type("notification.suppressed"): NotificationSuppressed,
    ce_type("notification.failed"): NotificationFailed,
}
MODEL_TYPES: dict[type[BaseModel], str] = {model: name for name, model in EVENT_MODELS.items()}
# How some types look on the platform's own topics, where it differs from what partners send.
ON_TOPIC_MODELS: dict[str, type[BaseModel]] = {
    ce_type("student.registered"): SealedStudent,
    ce_type("student.updated"): SealedStudent,
}


class UnknownEventType(LookupError):
    pass


def revives(event_type: str, event_time: datetime, erased_at: datetime) -> bool:
    """Whether a student event brings an erased student back: only a registration made after the erasure
    does; a late update (or a replayed old registration) does not."""
    return event_type == ce_type("student.registered") and event_time > erased_at


def model_for(type_: str) -> type[BaseModel]:
    try:
        return EVENT_MODELS[type_]
    except KeyError:
        raise UnknownEventType(type_) from None


def type_of(model: BaseModel | type[BaseModel]) -> str:
    cls = model if isinstance(model, type) else type(model)
    return MODEL_TYPES[cls]


def parse_data(type_: str, data: dict[str, Any]) -> BaseModel:
    """Validate `data` against the model of `type_`. Raises UnknownEventType or pydantic's ValidationError."""
    return model_for(type_).model_validate(data)


def field_errors(error: ValidationError) -> list[dict[str, str]]:
    """Every error of a validation, as {field, message}, the shape of rejections and 422 details."""
    errors = []
    for item in error.errors(include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "data"
        errors.append({"field": location, "message": item["msg"]})
    return errors


def dump(model: BaseModel) -> dict[str, Any]:
    """The JSON form of event data, as it goes on the wire."""
    return model.model_dump(mode="json", exclude_none=False)
