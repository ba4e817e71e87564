"""The one domain error: a use case refused, with every problem found and the kind of refusal.

Domains raise it; the HTTP layer alone maps a kind to a status (`web.http_error`), and the partner ingress
answers it on the partner's rejected topic. A domain refuses before it changes anything, so a refusal needs
no rollback of what the same transaction did for other records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ErrorKind = Literal["invalid", "forbidden", "not_found", "conflict"]
# When problems of several kinds are found, the refusal is of the most fundamental one.
PRECEDENCE: tuple[ErrorKind, ...] = ("forbidden", "not_found", "conflict", "invalid")


@dataclass(frozen=True)
class Problem:
    field: str
    message: str
    kind: ErrorKind = "invalid"

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}

    def under(self, prefix: str) -> Problem:
        """The same problem with its field named under `prefix` (`data.` in a rejection)."""
        return Problem(f"{prefix}{self.field}", self.message, self.kind)


class Refused(Exception):
    def __init__(self, problems: list[Problem] | Problem) -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        if not self.problems:
            raise ValueError("a refusal names at least one problem")
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in self.problems))

    @classmethod
    def of(cls, kind: ErrorKind, field: str, message: str) -> Refused:
        return cls(Problem(field, message, kind))

    @property
    def kind(self) -> ErrorKind:
        kinds = {p.kind for p in self.problems}
        return next(k for k in PRECEDENCE if k in kinds)


def refuse_if(problems: list[Problem]) -> None:
    if problems:
        raise Refused(problems)
