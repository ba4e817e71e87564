"""`techport run` (what `make run` calls) starts the platform as separate processes; a partner event published
by hand with `techport publish` is visible through the API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from techport_shared.identity import IDENTITY_HEADER, OPERATOR, issue_token

ROOT = Path(__file__).resolve().parents[1]
SECRET = "platform-test-secret-0123456789abcdef"


def _wait_for(path: Path, process: subprocess.Popen[bytes], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"techport run exited with {process.returncode}")
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.3)
    raise AssertionError("endpoints.json was not written")


def test_run_starts_the_platform_and_a_published_partner_event_reaches_the_api(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    env["TECHPORT_IDENTITY_SECRET"] = SECRET
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "techport_cli.main", "run", "--var", str(var)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        endpoints = _wait_for(var / "run" / "endpoints.json", process, timeout_s=180)
        assert endpoints["kafka"].startswith("127.0.0.1:")
        assert endpoints["smtp"].startswith("127.0.0.1:")
        assert Path(endpoints["mail_dir"]).is_absolute()
        members = endpoints["services"]["members"]
        headers = {IDENTITY_HEADER: issue_token(OPERATOR, SECRET)}
        school = {
            "organisation_id": "nova-college",
            "kind": "school",
            "name": "Nova College",
            "email": "info@novacollege.example.nl",
            "postcode": "1972 AB",
            "city": "IJmuiden",
            "brin_code": "25LH",
        }
        assert httpx.post(f"{members}/organisations", json=school, headers=headers).status_code == 201

        published = subprocess.run(
            [
                sys.executable,
                "-m",
                "techport_cli.main",
                "publish",
                "examples/partner-events/student-registered.json",
            ],
            cwd=ROOT,
            env={**env, "KAFKA_BOOTSTRAP_SERVERS": endpoints["kafka"]},
            capture_output=True,
            text=True,
            check=True,
        )
        assert "published nl.techport.student.registered.v1" in published.stdout

        deadline = time.monotonic() + 30
        while True:
            response = httpx.get(f"{members}/students/nova-stu-000123", headers=headers)
            if response.status_code == 200:
                break
            assert time.monotonic() < deadline, response.text
            time.sleep(0.3)
        assert response.json()["skills"] == ["elec.nen3140", "plc.programming", "safety.vca.basic", "lang.en"]
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        log.close()
    assert process.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert not (var / "run" / "endpoints.json").exists()
