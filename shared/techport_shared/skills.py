"""The skills vocabulary (contract section 3) and the normaliser that maps any label or synonym to its code.

`TIG-lassen`, `tig lassen` and `TIG welding` are one skill: case, accents, spaces, hyphens and punctuation
are ignored. Unknown text is kept (as `free:<normalised text>`), so it still matches the same text elsewhere.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

FREE_PREFIX = "free:"


@dataclass(frozen=True)
class Skill:
    code: str
    category: str
    nl: str
    en: str
    synonyms: tuple[str, ...]

    def label(self, language: str) -> str:
        return self.en if language == "en" else self.nl


@dataclass(frozen=True)
class NormalisedSkill:
    """What a piece of skill text resolved to: a vocabulary code, or kept free text."""

    text: str
    code: str

    @property
    def known(self) -> bool:
        return not self.code.startswith(FREE_PREFIX)


class Vocabulary:
    def __init__(self, skills: Iterable[Skill]) -> None:
        self.skills: dict[str, Skill] = {}
        self._by_key: dict[str, str] = {}
        for skill in skills:
            if skill.code in self.skills:
                raise ValueError(f"duplicate skill code {skill.code}")
            self.skills[skill.code] = skill
            for text in (skill.code, skill.nl, skill.en, *skill.synonyms):
                key = normal_key(text)
                owner = self._by_key.setdefault(key, skill.code)
                if owner != skill.code:
                    raise ValueError(f"{text!r} names both {owner} and {skill.code}")

    def __len__(self) -> int:
        return len(self.skills)

    def normalise(self, text: str) -> NormalisedSkill:
        key = normal_key(text)
        if key.startswith(normal_key(FREE_PREFIX)):
            # Already normalised free text (e.g. replayed from storage) stays as it is.
            return NormalisedSkill(text, FREE_PREFIX + key[len(normal_key(FREE_PREFIX)) :])
        code = self._by_key.get(key)
        return NormalisedSkill(text, code if code is not None else FREE_PREFIX + key)

    def normalise_all(self, texts: Iterable[str]) -> list[NormalisedSkill]:
        """Each distinct skill once, in first-seen order; empty text is dropped."""
        seen: set[str] = set()
        result = []
        for text in texts:
            if not normal_key(text):
                continue
            skill = self.normalise(text)
            if skill.code not in seen:
                seen.add(skill.code)
                result.append(skill)
        return result

    def codes(self, texts: Iterable[str]) -> list[str]:
        return [skill.code for skill in self.normalise_all(texts)]

    def label(self, code: str, language: str = "nl") -> str:
        """A human label for a stored code, in the reader's language; free text shows as itself."""
        skill = self.skills.get(code)
        if skill is not None:
            return skill.label(language)
        return code.removeprefix(FREE_PREFIX)


_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def normal_key(text: str) -> str:
    """Case, accents, spacing, hyphens and punctuation do not matter."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    ascii_only = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_ALNUM.sub("", ascii_only.replace("&", "and").replace("+", "plus"))


@cache
def vocabulary() -> Vocabulary:
    source = resources.files("techport_shared.data").joinpath("skills.csv")
    with source.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return Vocabulary(
        Skill(
            code=row["code"],
            category=row["category"],
            nl=row["nl"],
            en=row["en"],
            synonyms=tuple(s.strip() for s in row["synonyms"].split("|") if s.strip()),
        )
        for row in rows
    )
