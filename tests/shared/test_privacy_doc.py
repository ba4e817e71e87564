"""docs/privacy.md names every place personal data can live: every table of every service's database and every
topic of the catalog (and each partner's own two), with how long it is kept and how erasure reaches it."""

from __future__ import annotations

import re
from pathlib import Path

from techport_gateway.store import metadata as gateway_metadata
from techport_matching.store import metadata as matching_metadata
from techport_members.store import metadata as members_metadata
from techport_notifications.store import metadata as notifications_metadata
from techport_shared.topics import CATALOG, PARTNER_PREFIX

DOC = (Path(__file__).resolve().parents[2] / "docs" / "privacy.md").read_text(encoding="utf-8")
SERVICES = {
    "members": members_metadata,
    "matching": matching_metadata,
    "notifications": notifications_metadata,
    "gateway": gateway_metadata,
}


def _rows(section: str) -> dict[str, list[str]]:
    """The first cell's `names` of each row of a section's table -> the row's cells."""
    body = DOC.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in body.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and not set(cells[0]) <= {"-", " "}:
            for name in re.findall(r"`([^`]+)`", cells[0]):
                rows[name] = cells
    return rows


def test_every_table_of_every_service_is_in_the_privacy_document() -> None:
    listed = _rows("Tables")
    tables = {f"{service}.{table}" for service, metadata in SERVICES.items() for table in metadata.tables}
    assert len(tables) > 20
    assert sorted(tables - set(listed)) == [], "tables missing from docs/privacy.md"
    assert sorted(set(listed) - tables) == [], "docs/privacy.md lists tables that do not exist"
    for name, cells in listed.items():
        assert all(cells[1:]), f"{name}: every column says something"


def test_every_topic_is_in_the_privacy_document_with_how_long_it_is_kept() -> None:
    listed = _rows("Topics")
    for topic in CATALOG:
        assert topic.name in listed, topic.name
        days = int(topic.configs["retention.ms"]) / 86_400_000
        kept = listed[topic.name][2]
        assert (f"{days:g} days" in kept) or (days < 1 and "hour" in kept), (topic.name, kept)
    assert f"{PARTNER_PREFIX}<id>.ingress.v1" in listed and f"{PARTNER_PREFIX}<id>.rejected.v1" in listed
