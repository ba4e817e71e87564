"""A served process's collector: what the imports made is frozen before the first request."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import gc, json, sys
from techport_shared import entrypoint
entrypoint._settle_heap("techport_members.main:create_app")
print(json.dumps({"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()[0],
                  "imported": "techport_members.main" in sys.modules}))
"""


def _probe(**env: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_serving_freezes_what_the_service_imported() -> None:
    seen = _probe()
    assert seen["imported"] is True
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 100_000
    assert seen["threshold"] == 10_000


def test_the_freeze_can_be_turned_off() -> None:
    seen = _probe(TECHPORT_GC_FREEZE="0")
    assert seen == {"frozen": 0, "threshold": 700, "imported": False}
