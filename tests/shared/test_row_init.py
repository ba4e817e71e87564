"""Table rows built by `RowInit` are the rows SQLModel builds, at a fraction of the cost."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session, registry
from sqlmodel import Field, SQLModel
from techport_shared.db import RowInit, json_field


def _fields(cls_base: type[Any], name: str) -> type[Any]:
    class Row(cls_base, table=True):  # type: ignore[misc, valid-type]
        __tablename__ = name
        id: int | None = Field(default=None, primary_key=True)
        code: str = Field(max_length=20)
        count: int = 3
        token: str = Field(default_factory=lambda: uuid.uuid4().hex)
        note: str | None = None
        details: dict[str, Any] = json_field()
        at: datetime | None = None

    return Row


class PlainTable(SQLModel, registry=registry()):
    pass


class LeanTable(RowInit, SQLModel, registry=registry()):
    pass


PlainRow = _fields(PlainTable, "plain_rows")
LeanRow = _fields(LeanTable, "lean_rows")


def _values(row: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(row).items() if not k.startswith("_sa_")}


@pytest.mark.parametrize(
    "given",
    [
        {"code": "a", "details": {"x": [1, 2]}},
        {"code": "b", "count": 7, "note": "n", "details": {}, "at": datetime(2027, 1, 1, tzinfo=UTC)},
        {"code": "d", "details": {}, "id": 4},
        {"code": "c", "details": {}, "token": "fixed"},
    ],
)
def test_a_row_has_the_values_defaults_and_fields_set_sqlmodel_gives_it(given: dict[str, Any]) -> None:
    plain, lean = PlainRow(**given), LeanRow(**given)
    expected, got = _values(plain), _values(lean)
    # A default factory makes a new value each time: the same kind of value, not the same one.
    assert len(got.pop("token")) == len(expected.pop("token"))
    assert got == expected
    assert lean.__pydantic_fields_set__ == plain.__pydantic_fields_set__ == set(given)
    assert lean.model_dump(exclude={"token"}) == plain.model_dump(exclude={"token"})
    # The ORM saw each value set, as it does in its own constructor (what a flush and an event go by).
    for name in expected:
        assert sa_inspect(lean).attrs[name].history == sa_inspect(plain).attrs[name].history, name


def test_a_value_set_on_a_row_is_set_as_sqlmodel_sets_it() -> None:
    plain, lean = PlainRow(code="a", details={}), LeanRow(code="a", details={})
    for row in (plain, lean):
        row.note, row.count = "changed", 9
    assert _values(lean) | {"token": ""} == _values(plain) | {"token": ""}
    fields_set = {"code", "details", "note", "count"}
    assert lean.__pydantic_fields_set__ == plain.__pydantic_fields_set__ == fields_set
    for name in ("note", "count", "code"):
        assert sa_inspect(lean).attrs[name].history == sa_inspect(plain).attrs[name].history, name


def test_a_row_is_inserted_updated_and_read_back_through_the_orm() -> None:
    engine = create_engine("sqlite://")
    LeanTable.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(LeanRow(code="a", details={"k": "v"}, note="first"))
        session.commit()
        row = session.get(LeanRow, 1)
        assert row is not None
        assert (row.code, row.count, row.details, row.note) == ("a", 3, {"k": "v"}, "first")
        row.note = "second"
        session.commit()
    with Session(engine) as session:
        again = session.get(LeanRow, 1)
        assert again is not None and again.note == "second" and len(again.token) == 32


def test_a_name_that_is_no_field_is_refused_rather_than_dropped() -> None:
    with pytest.raises(TypeError, match="no field colour"):
        LeanRow(code="a", details={}, colour="red")
