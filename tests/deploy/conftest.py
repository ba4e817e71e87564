"""The deployment as the tools that read it see it: kustomize's renders of each overlay, the compose file."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools"
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")


def kustomize_build(path: Path) -> str:
    kustomize = TOOLS / "bin" / "kustomize"
    assert kustomize.exists(), "run `make deploy-tools` (make test does)"
    return subprocess.run(
        [str(kustomize), "build", str(path)], capture_output=True, text=True, check=True
    ).stdout


class Render:
    """One overlay rendered: its objects, and lookups by kind and name."""

    def __init__(self, overlay: str, text: str) -> None:
        self.overlay = overlay
        self.text = text
        self.objects: list[dict[str, Any]] = [d for d in yaml.safe_load_all(text) if d]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {name}, found {len(found)}"
        return found[0]


_renders: dict[str, Render] = {}


@pytest.fixture(params=OVERLAYS)
def render(request: pytest.FixtureRequest) -> Render:
    overlay = request.param
    if overlay not in _renders:
        _renders[overlay] = Render(overlay, kustomize_build(K8S / "overlays" / overlay))
    return _renders[overlay]


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())
