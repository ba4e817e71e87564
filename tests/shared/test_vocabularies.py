from __future__ import annotations

import pytest
from techport_shared.postcodes import lookup, normalise_postcode
from techport_shared.skills import FREE_PREFIX, normal_key, vocabulary


def test_vocabulary_is_large_and_bilingual() -> None:
    vocab = vocabulary()
    assert len(vocab) >= 150
    for skill in vocab.skills.values():
        assert skill.nl and skill.en and skill.code
    categories = {skill.category for skill in vocab.skills.values()}
    assert {
        "welding",
        "machining",
        "automation",
        "maintenance",
        "hydraulics",
        "safety",
        "offshore wind",
    } <= categories


@pytest.mark.parametrize(
    "text", ["TIG-lassen", "tig lassen", "TIG welding", "  Tig_Lassen ", "GTAW", "tig-LASSEN"]
)
def test_labels_and_synonyms_in_any_case_map_to_one_code(text: str) -> None:
    assert vocabulary().normalise(text).code == "weld.tig"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("VCA Basis", "safety.vca.basic"),
        ("B-VCA", "safety.vca.basic"),
        ("GWO Basic Safety Training", "safety.gwo.bst"),
        ("Siemens PLC (TIA Portal)", "plc.siemens"),
        ("cnc frezen", "cnc.milling"),
        ("Röntgenonderzoek", "quality.ndt.rt"),
        ("weld.tig", "weld.tig"),
        ("hydraulische systemen", "hyd.systems"),
    ],
)
def test_known_skills(text: str, code: str) -> None:
    assert vocabulary().normalise(text).code == code


def test_unknown_text_is_kept_and_matches_only_itself() -> None:
    vocab = vocabulary()
    first = vocab.normalise("Onderwater-lassen")
    again = vocab.normalise("onderwater lassen")
    assert not first.known
    assert first.code == again.code == FREE_PREFIX + "onderwaterlassen"
    assert vocab.normalise(first.code).code == first.code  # stored free text reads back as itself
    assert vocab.label(first.code) == "onderwaterlassen"


def test_normalise_all_keeps_order_drops_repeats_and_blanks() -> None:
    codes = vocabulary().codes(["MIG-lassen", "mig lassen", "", "Heftruck rijden", "iets nieuws"])
    assert codes == ["weld.mig", "lift.forklift", "free:ietsnieuws"]


def test_no_text_names_two_skills() -> None:
    vocab = vocabulary()
    seen: dict[str, str] = {}
    for skill in vocab.skills.values():
        for text in (skill.code, skill.nl, skill.en, *skill.synonyms):
            assert seen.setdefault(normal_key(text), skill.code) == skill.code


@pytest.mark.parametrize("raw", ["1971AB", "1971 ab", " 1971ab ", "1971 AB"])
def test_postcodes_normalise(raw: str) -> None:
    assert normalise_postcode(raw) == "1971 AB"


@pytest.mark.parametrize("raw", ["0971 AB", "1971", "1971 A", "197 AB", "ABCD EF", ""])
def test_bad_postcodes_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        normalise_postcode(raw)


def test_postcode_lookup_by_pc4() -> None:
    ijmuiden = lookup("1971 ab")
    assert ijmuiden is not None and ijmuiden.place == "IJmuiden"
    assert 52.4 < ijmuiden.lat < 52.5 and 4.5 < ijmuiden.lon < 4.7
    assert lookup("1011AB").place == "Amsterdam"  # type: ignore[union-attr]
    assert lookup("not a postcode") is None


def test_single_outlier_takes_its_neighbours_position() -> None:
    # GeoNames lists 1954 (between Beverwijk and Velsen-Noord) as Tiel, 80 km away.
    area = lookup("1954 AA")
    assert area is not None and area.corrected
    assert area.place == "Beverwijk"
    assert abs(area.lat - 52.49) < 0.05 and abs(area.lon - 4.66) < 0.05
