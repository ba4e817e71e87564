"""schemathesis against the gateway's OpenAPI, over the running platform: no request gives a 5xx."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from tests.gateway.conftest import OPERATOR_KEY


async def test_no_generated_request_gets_a_server_error(platform, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    process = await asyncio.create_subprocess_exec(
        str(schemathesis),
        "run",
        f"{platform.gateway}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--header",
        f"Authorization: Bearer {OPERATOR_KEY}",
        "--max-examples",
        "25",
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "20271128",
        "--request-timeout",
        "15",
        "--report-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=400)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]
    summary = re.search(r"(\d+) generated, (\d+) passed", text)
    assert summary is not None, text[-3000:]
    generated, passed = int(summary.group(1)), int(summary.group(2))
    assert generated > 500 and passed == generated, text[-3000:]  # it really sent requests, all were fine
