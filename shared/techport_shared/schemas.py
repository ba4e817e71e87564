"""JSON Schema per event type (`make schemas` writes them to docs/schemas/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from techport_shared.events import EVENT_MODELS


def render() -> dict[str, str]:
    """File name -> JSON text, for every event type of the contract."""
    files = {}
    for type_, model in sorted(EVENT_MODELS.items()):
        schema = model.model_json_schema(mode="validation")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://techport.nl/schemas/{type_}.json",
            "title": type_,
            "description": f"The `data` of a CloudEvent of type {type_} (binary mode: the record value).",
            **{k: v for k, v in schema.items() if k not in ("title", "description")},
        }
        files[f"{type_}.json"] = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return files


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    rendered = render()
    for stale in directory.glob("*.json"):
        if stale.name not in rendered:
            stale.unlink()
    for name, text in rendered.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")
    for path in write(target):
        print(path)
