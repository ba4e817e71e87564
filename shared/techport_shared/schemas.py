"""JSON Schema per event type (`make schemas` writes them to docs/schemas/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from techport_shared.events import EVENT_MODELS, ON_TOPIC_MODELS


def render() -> dict[str, str]:
    """File name -> JSON text, for every event type of the contract, and for the types that look otherwise
    on the platform's own topics (a student's personal fields sealed) a second file,
    `<type>.on-topic.json`."""
    files = {}
    for type_, model in sorted(EVENT_MODELS.items()):
        files[f"{type_}.json"] = _schema(type_, type_, model, "")
    for type_, model in sorted(ON_TOPIC_MODELS.items()):
        note = " as members publishes it on techport.students.v1: the personal fields sealed"
        files[f"{type_}.on-topic.json"] = _schema(type_, f"{type_}.on-topic", model, note)
    return files


def _schema(type_: str, name: str, model: type[BaseModel], note: str) -> str:
    schema = model.model_json_schema(mode="validation")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://techport.nl/schemas/{name}.json",
        "title": type_,
        "description": f"The `data` of a CloudEvent of type {type_}{note} (binary mode: the record value).",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


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
