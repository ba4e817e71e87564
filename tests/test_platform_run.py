"""`techport run` (what `make run` calls) starts the platform as separate processes; a partner event published
by hand with `techport publish` is visible through the API."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from techport_dev.kafka import free_port

ROOT = Path(__file__).resolve().parents[1]
SECRET = "platform-test-secret-0123456789abcdef"
OPERATOR_KEY = "op_platform_test_0123456789abcdef"


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
    env["TECHPORT_OPERATOR_KEY"] = OPERATOR_KEY
    env["TECHPORT_GATEWAY_PORT"] = str(free_port())
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
        assert set(endpoints["services"]) == {"members", "matching", "notifications"}
        api = f"{endpoints['gateway']}/api/v1"
        headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        school = {
            "organisation_id": "nova-college",
            "kind": "school",
            "name": "Nova College",
            "email": "info@novacollege.example.nl",
            "postcode": "1972 AB",
            "city": "IJmuiden",
            "brin_code": "25LH",
        }
        publish = [sys.executable, "-m", "techport_cli.main", "publish"]
        example = "examples/partner-events/student-registered.json"
        kafka_env = {**env, "KAFKA_BOOTSTRAP_SERVERS": endpoints["kafka"]}
        # Before the school is registered its topic does not exist: said at once, not as a traceback.
        early = subprocess.run([*publish, example], cwd=ROOT, env=kafka_env, capture_output=True, text=True)
        assert early.returncode == 1 and "Traceback" not in early.stderr, early.stderr[-2000:]
        assert "nova-college is not a registered partner" in early.stderr, early.stderr[-2000:]

        registered = httpx.post(f"{api}/organisations", json=school, headers=headers)
        assert registered.status_code == 201 and registered.json()["api_key"].startswith("tpk_")
        school_key = {"Authorization": f"Bearer {registered.json()['api_key']}"}

        published = subprocess.run(
            [*publish, example], cwd=ROOT, env=kafka_env, capture_output=True, text=True, check=True
        )
        assert "published nl.techport.student.registered.v1" in published.stdout

        deadline = time.monotonic() + 30
        while True:
            response = httpx.get(f"{api}/students/nova-stu-000123", headers=school_key)
            if response.status_code == 200:
                break
            assert time.monotonic() < deadline, response.text
            time.sleep(0.3)
        assert response.json()["skills"] == ["elec.nen3140", "plc.programming", "safety.vca.basic", "lang.en"]

        demo = subprocess.run(
            [sys.executable, "-m", "techport_cli.main", "demo", "--var", str(var), "--students", "60"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
        total = int(re.search(r"(\d+) matches in all", demo.stdout).group(1))
        assert total > 0, demo.stdout
        assert endpoints["mail_dir"] in demo.stdout.replace("\n", "")

        for guide in ("docs/partner-guide.md", "docs/operator-guide.md"):
            _run_guide(guide, tmp_path, endpoints, var, env)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        log.close()
    assert process.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert not (var / "run" / "endpoints.json").exists()


def _run_guide(guide: str, tmp_path: Path, endpoints: dict, var: Path, env: dict[str, str]) -> None:
    """Every `sh` block of a guide, in order, as one script, against the running platform."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / guide).read_text(), flags=re.S)
    assert blocks, guide
    work = tmp_path / Path(guide).stem
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    shim = work / "bin" / "uv"
    shim.parent.mkdir()
    # The real uv by its path: a bare "uv" would find this shim first on the guide's PATH and call itself
    # for good (outside `uv run`, which sets UV).
    uv = os.environ.get("UV") or shutil.which("uv") or "uv"
    shim.write_text(
        f'#!/bin/bash\nif [ "$1" = run ]; then shift; exec "{uv}" run --frozen --project "{ROOT}" "$@"; fi\n'
        f'exec "{uv}" "$@"\n'
    )
    shim.chmod(0o755)
    script = "set -euo pipefail\n" + "\n".join(blocks)
    guide_env = {
        **env,
        "PATH": f"{shim.parent}:{env['PATH']}",
        "TECHPORT_GATEWAY": endpoints["gateway"],
        "TECHPORT_API": f"{endpoints['gateway']}/api/v1",
        "KAFKA_BOOTSTRAP_SERVERS": endpoints["kafka"],
        **{
            f"{service.upper()}_DATABASE_URL": f"sqlite:///{(var / f'{service}.db').resolve()}"
            for service in ("members", "matching", "notifications")
        },
    }
    result = subprocess.run(
        ["bash", "-c", script], cwd=work, env=guide_env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{guide}: {result.stdout[-1500:]} {result.stderr[-3000:]}"
