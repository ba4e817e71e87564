"""The quick check of plain e-mail addresses answers as email-validator (pydantic's EmailStr) does, or not
at all."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic.networks import validate_email
from techport_shared.events import Email, plain_email

# Characters that make addresses hard: atext specials, dots, hyphens, digits, capitals, a non-ASCII letter.
_PARTS = st.text(alphabet="aZ09.-_+!#'~xn", min_size=0, max_size=12)


def _full(value: str) -> str | None:
    try:
        return validate_email(value)[1]
    except Exception:  # email-validator's and pydantic's refusals both
        return None


@settings(max_examples=3000, deadline=None)
@given(
    local=_PARTS,
    labels=st.lists(st.text(alphabet="aZ09-xné", min_size=0, max_size=10), min_size=1, max_size=4),
    tld=st.sampled_from(["nl", "COM", "c", "test", "local", "a1", "ru", "xn--p1ai", "Onion", "arpa"]),
)
def test_a_plain_address_is_accepted_only_as_email_validator_accepts_and_normalises_it(
    local: str, labels: list[str], tld: str
) -> None:
    value = f"{local}@{'.'.join([*labels, tld])}"
    quick = plain_email(value)
    if quick is not None:
        assert quick == _full(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Jan.de-Vries+stage@Example.NL", "Jan.de-Vries+stage@example.nl"),
        ("hr@techport.nl", "hr@techport.nl"),
        ("a@b.c", "a@b.c"),  # a one-letter top-level domain: the full check takes it
        ("a@xn--p1ai.ru", "a@рф.ru"),  # an IDNA label: normalised to Unicode by the full check
        ("Jan <jan@techport.nl>", "jan@techport.nl"),  # a display name, as pydantic's EmailStr takes it
    ],
)
def test_the_email_type_gives_what_emailstr_gives(value: str, expected: str) -> None:
    class Model(BaseModel):
        email: Email

    assert Model(email=value).email == expected


@pytest.mark.parametrize(
    "value", ["a..b@x.nl", "a@x.test", "x@y", "a@b-.nl", ".a@x.nl", "a@" + "x" * 250 + ".nl"]
)
def test_the_email_type_refuses_what_emailstr_refuses(value: str) -> None:
    class Model(BaseModel):
        email: Email

    with pytest.raises(ValidationError) as refused:
        Model(email=value)
    assert "email" in str(refused.value)
