"""docker-compose.yml: valid against the Compose specification's schema, ordered (infrastructure, topics and
migrations before services), every setting set, and image names the same as the manifests and Makefile."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import subprocess
from typing import Any

import asyncpg
import jsonschema
import pytest
import yaml
from techport_shared.settings import KafkaSettings, environment_names

from tests.deploy.conftest import K8S, REPO, TOOLS, kustomize_build
from tests.deploy.test_kubernetes import SETTINGS


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads((TOOLS / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in _validator().iter_errors(compose)]
    assert not errors


def test_the_schema_check_catches_a_broken_compose_file(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["members"]["depends_on"]["postgres"]["condition"] = "service_feeling_fine"
    broken["services"]["gateway"]["healthcheck"] = {"test": "curl", "intervall": "5s"}
    assert len(list(_validator().iter_errors(broken))) >= 2


def test_services_start_after_their_infrastructure_topics_and_migrations(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("kafka", "postgres", "mailpit"):
        assert services[name]["healthcheck"]["test"]
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in SETTINGS:
        migrate = services[f"{name}-migrate"]
        assert migrate["command"][-1] == "migrate" and migrate["image"] == services[name]["image"]
        assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
        needs = services[name]["depends_on"]
        assert needs[f"{name}-migrate"]["condition"] == "service_completed_successfully"
        if name != "gateway":
            assert needs["topics"]["condition"] == "service_completed_successfully"
        # Each service has its own database and login.
        url = services[name]["environment"][f"{name.upper()}_DATABASE_URL"]
        assert re.fullmatch(rf"postgresql://{name}:\$\{{\w+:-[\w-]+\}}@postgres:5432/{name}", url), url
    gateway_needs = services["gateway"]["depends_on"]
    for upstream in ("members", "matching", "notifications"):
        assert gateway_needs[upstream]["condition"] == "service_healthy"


@pytest.mark.postgres
async def test_the_postgres_init_script_gives_each_service_its_own_database_and_login(
    postgres_server,
) -> None:
    # What the postgres image runs from /docker-entrypoint-initdb.d, run against a real PostgreSQL.
    env = {
        **os.environ,
        "PATH": f"{postgres_server.bindir}:{os.environ['PATH']}",
        "POSTGRES_USER": "postgres",
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres_server.port),
        **{f"{name.upper()}_DB_PASSWORD": f"{name}-secret" for name in SETTINGS},
    }
    script = REPO / "deploy" / "compose" / "postgres-init.sh"
    await asyncio.to_thread(subprocess.run, ["bash", str(script)], env=env, check=True, capture_output=True)
    for name in SETTINGS:
        own = f"postgresql://{name}@127.0.0.1:{postgres_server.port}/{name}"
        connection = await asyncpg.connect(own)
        assert await connection.fetchval("SELECT current_user") == name
        await connection.execute("CREATE TABLE mine (id int)")  # it owns its database
        await connection.close()
        other = "matching" if name != "matching" else "members"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(f"postgresql://{name}@127.0.0.1:{postgres_server.port}/{other}")


def test_every_setting_a_service_reads_is_set_in_compose(compose: dict[str, Any]) -> None:
    for name, settings in SETTINGS.items():
        for service in (name, f"{name}-migrate"):
            environment = compose["services"][service]["environment"]
            missing = set(environment_names(settings)) - set(environment)
            assert not missing, f"{service} does not set {sorted(missing)}"
    topics_env = compose["services"]["topics"]["environment"]
    assert set(environment_names(KafkaSettings)) <= set(topics_env)


def _makefile_images() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    registry = re.search(r"^IMAGE_REGISTRY \?= (\S+)$", makefile, re.M).group(1)  # type: ignore[union-attr]
    services = re.search(r"^SERVICES := (.+)$", makefile, re.M).group(1).split()  # type: ignore[union-attr]
    assert "$(IMAGE_REGISTRY)/cli:$(IMAGE_TAG)" in makefile
    return {f"{registry}/{s}" for s in [*services, "cli"]}


def test_image_names_agree_between_compose_manifests_and_makefile(compose: dict[str, Any]) -> None:
    compose_images = {s["image"].split(":")[0] for s in compose["services"].values() if "build" in s}
    manifest_images = set()
    for overlay in ("dev", "prod"):
        for obj in yaml.safe_load_all(kustomize_build(K8S / "overlays" / overlay)):
            if obj and obj["kind"] == "Deployment":
                pod = obj["spec"]["template"]["spec"]
                for container in [*pod["containers"], *pod.get("initContainers", [])]:
                    manifest_images.add(container["image"].rsplit(":", 1)[0])
    makefile = _makefile_images()
    assert manifest_images == {i for i in makefile if not i.endswith("/cli")}
    assert compose_images == makefile
    # compose builds each image from the Dockerfile target the Makefile uses
    for service in compose["services"].values():
        if "build" in service:
            name = service["image"].split(":")[0].rsplit("/", 1)[1]
            assert service["build"]["args"]["SERVICE"] == name
            assert service["build"]["target"] == ("cli" if name == "cli" else "service")
