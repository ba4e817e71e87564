from __future__ import annotations

from pathlib import Path

from techport_shared.events import EVENT_MODELS, ON_TOPIC_MODELS
from techport_shared.schemas import render

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def test_committed_schemas_match_the_models() -> None:
    rendered = render()
    assert len(rendered) == len(EVENT_MODELS) + len(ON_TOPIC_MODELS)
    committed = {path.name: path.read_text(encoding="utf-8") for path in SCHEMA_DIR.glob("*.json")}
    assert set(committed) == set(rendered), "event types changed: run `make schemas`"
    stale = sorted(name for name, text in rendered.items() if committed[name] != text)
    assert not stale, f"models changed but schemas were not regenerated (run `make schemas`): {stale}"
