"""deploy/k8s, rendered by kustomize for every overlay: valid for Kubernetes 1.37 and for the operators'
CRDs, hardened (checkov), and consistent with the code it deploys (settings, topics, consumers, images)."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from pydantic import SecretStr
from techport_gateway.settings import GatewaySettings
from techport_matching import main as matching_main
from techport_matching.settings import MatchingSettings
from techport_members.settings import MembersSettings
from techport_notifications import main as notifications_main
from techport_notifications.settings import NotificationsSettings
from techport_shared.access import SERVICE_GRANTS, partner_grants, partner_principal
from techport_shared.settings import KafkaSettings, environment_names
from techport_shared.topics import CATALOG, DLQ, PARTNER_PREFIX, RETIRED_INGRESS

from tests.deploy.conftest import REPO, TOOLS, Render

SETTINGS = {
    "members": MembersSettings,
    "matching": MatchingSettings,
    "notifications": NotificationsSettings,
    "gateway": GatewaySettings,
}
# What each consumer subscribes to, read from the code that subscribes (members: every partner's ingress
# topic, by pattern under PARTNER_PREFIX, and the retired shared one).
SUBSCRIBED = {
    "members": {PARTNER_PREFIX, RETIRED_INGRESS.name},
    "matching": set(matching_main.TOPICS),
    "notifications": set(notifications_main.TOPICS),
}
KUBERNETES_VERSION = "1.37.0"
CORE_GROUPS = {"v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1", "batch/v1"}


def _group(obj: dict[str, Any]) -> str:
    return obj["apiVersion"]


def test_every_core_object_is_valid_for_kubernetes_1_37(render: Render) -> None:
    core = [o for o in render.objects if _group(o) in CORE_GROUPS]
    assert len(core) > 30
    for obj in core:
        # strict: an unknown or misspelt field is an error, not ignored
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


class _CrdLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML 1.1 reads a bare `=` (an enum value in a Prometheus CRD) as its obsolete `value` tag. (libyaml's
    loader where PyYAML has it: the CRDs are megabytes, ten times slower to read in pure Python.)"""


_CrdLoader.add_constructor("tag:yaml.org,2002:value", _CrdLoader.construct_scalar)  # type: ignore[arg-type]


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted((TOOLS / "crds").glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=_CrdLoader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def test_keda_cloudnativepg_and_prometheus_resources_are_valid_for_their_crds(render: Render) -> None:
    schemas = _crd_schemas()
    checked = 0
    for obj in render.objects:
        key = (obj["apiVersion"], obj["kind"])
        if obj["apiVersion"].split("/")[0].endswith(("keda.sh", "cnpg.io", "monitoring.coreos.com")):
            assert key in schemas, f"no CRD for {key}"
            errors = list(jsonschema.Draft7Validator(schemas[key]).iter_errors(obj))
            assert not errors, f"{obj['kind']} {obj['metadata']['name']}: {[e.message for e in errors]}"
            checked += 1
    assert checked >= 4 + 3 + 1 + 2  # Clusters, ScaledObjects, TriggerAuthentication, monitoring


def test_the_crd_check_catches_a_missing_required_field() -> None:
    schemas = _crd_schemas()
    scaled = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"}, "spec": {}}
    assert list(jsonschema.Draft7Validator(schemas[("keda.sh/v1alpha1", "ScaledObject")]).iter_errors(scaled))


# Strimzi publishes its CRDs in no registry we reach; these are the fields its operators reject without.
STRIMZI_REQUIRED = {
    "Kafka": [
        "spec.kafka.listeners",
        "spec.entityOperator.topicOperator",
        "spec.entityOperator.userOperator",
    ],
    "KafkaNodePool": ["spec.replicas", "spec.roles", "spec.storage.type"],
    "KafkaTopic": ["spec.partitions", "spec.replicas", "metadata.labels.strimzi.io/cluster"],
    "KafkaUser": ["spec.authentication.type", "metadata.labels.strimzi.io/cluster"],
}


def _at(obj: dict[str, Any], dotted: str) -> Any:
    node: Any = obj
    parts = dotted.split(".")
    i = 0
    while i < len(parts):
        # label keys contain dots: take the longest key that exists
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if isinstance(node, dict) and key in node:
                node, i = node[key], j
                break
        else:
            return None
    return node


def test_strimzi_resources_have_their_required_fields(render: Render) -> None:
    cluster = render.get("Kafka", "techport-kafka")
    for kind, fields in STRIMZI_REQUIRED.items():
        objects = render.of_kind(kind)
        assert objects, kind
        for obj in objects:
            for field in fields:
                assert _at(obj, field) is not None, f"{kind} {obj['metadata']['name']} lacks {field}"
            if "strimzi.io/cluster" in obj["metadata"].get("labels", {}):
                assert obj["metadata"]["labels"]["strimzi.io/cluster"] == cluster["metadata"]["name"]
    for listener in cluster["spec"]["kafka"]["listeners"]:
        assert {"name", "port", "type", "tls"} <= set(listener)
        assert listener["authentication"]["type"] == "scram-sha-512"
    assert cluster["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert sum(p["spec"]["replicas"] for p in render.of_kind("KafkaNodePool")) == 3
    assert cluster["spec"]["kafka"]["config"]["min.insync.replicas"] == 2


def test_every_service_has_deployment_service_pdb_autoscaling_and_probes(render: Render) -> None:
    for name in SETTINGS:
        deployment = render.get("Deployment", name)
        render.get("Service", name)
        render.get("PodDisruptionBudget", name)
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in [*pod["containers"], *pod.get("initContainers", [])]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["topologySpreadConstraints"]
        # Migrations run before the service, from the same image.
        [migrate] = pod["initContainers"]
        assert migrate["image"] == container["image"] and migrate["args"][-1] == "migrate"
        # Exactly one autoscaler: consumers scale on lag with KEDA (which owns their HPA), the gateway on CPU.
        hpas = [
            h
            for h in render.of_kind("HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == name
        ]
        scaled = [s for s in render.of_kind("ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == name]
        if name in SUBSCRIBED:
            assert not hpas and len(scaled) == 1
            lag_topics = {
                t["metadata"].get("topic") for t in scaled[0]["spec"]["triggers"] if t["type"] == "kafka"
            }
            # Members reads partners' topics by pattern: KEDA measures the lag of every topic of its group.
            assert lag_topics == ({None} if name == "members" else SUBSCRIBED[name])
            groups = {
                t["metadata"]["consumerGroup"] for t in scaled[0]["spec"]["triggers"] if t["type"] == "kafka"
            }
            assert groups == {_config(render, name)[f"{name.upper()}_CONSUMER_GROUP"]}
        else:
            assert len(hpas) == 1 and not scaled


def _config(render: Render, service: str) -> dict[str, str]:
    """The values a service's container sees from its ConfigMaps."""
    container = render.get("Deployment", service)["spec"]["template"]["spec"]["containers"][0]
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        values.update(render.get("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            values[var["name"]] = var["value"]
    return values


def test_every_setting_a_service_reads_is_set_by_the_manifests(render: Render) -> None:
    for name, settings in SETTINGS.items():
        pod = render.get("Deployment", name)["spec"]["template"]["spec"]
        for container in [*pod["containers"], *pod["initContainers"]]:
            provided = {v["name"] for v in container.get("env", [])}
            for source in container.get("envFrom", []):
                provided |= set(render.get("ConfigMap", source["configMapRef"]["name"])["data"])
            missing = set(environment_names(settings)) - provided
            assert not missing, f"{render.overlay}: {name}/{container['name']} does not set {sorted(missing)}"


def test_secrets_come_from_secret_references_and_none_is_committed(render: Render) -> None:
    assert not render.of_kind("Secret")
    for name, settings in SETTINGS.items():
        secret_names = _secret_env_names(settings)
        container = render.get("Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        by_name = {v["name"]: v for v in container["env"]}
        for var in secret_names:
            assert "secretKeyRef" in by_name[var].get("valueFrom", {}), f"{name}: {var} is not from a Secret"
        for config_map in render.of_kind("ConfigMap"):
            assert not set(config_map.get("data", {})) & secret_names, config_map["metadata"]["name"]
        # The database URL carries a password: from CloudNativePG's Secret.
        assert by_name[f"{name.upper()}_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
            "name": f"{name}-db-app",
            "key": "uri",
        }


def _secret_env_names(settings: type) -> set[str]:
    names = environment_names(settings)
    secret = set()
    for model in [
        settings,
        *(f.annotation for f in settings.model_fields.values() if isinstance(f.annotation, type)),
    ]:
        for field_name, info in getattr(model, "model_fields", {}).items():
            if info.annotation in (SecretStr, SecretStr | None):
                secret |= {n for n in names if n.endswith(field_name.upper()) or n in _aliases(info)}
    return secret


def _aliases(info: Any) -> set[str]:
    alias = info.validation_alias
    return {str(c).upper() for c in getattr(alias, "choices", [])}


def test_every_catalog_topic_has_a_kafka_topic_that_agrees_with_the_settings(render: Render) -> None:
    platform = render.get("ConfigMap", "techport-platform")["data"]
    settings = KafkaSettings(
        topic_partitions_default=int(platform["TOPIC_PARTITIONS_DEFAULT"]),
        topic_partitions=json.loads(platform["TOPIC_PARTITIONS"]),
    )
    topics = {t["spec"]["topicName"]: t for t in render.of_kind("KafkaTopic")}
    assert set(topics) == {t.name for t in CATALOG}
    for spec in CATALOG:
        topic = topics[spec.name]["spec"]
        assert topic["partitions"] == spec.partitions(settings), spec.name
        assert topic["replicas"] == int(platform["TOPIC_REPLICATION_FACTOR"]) == 3
        assert topic["config"]["min.insync.replicas"] == platform["TOPIC_MIN_INSYNC_REPLICAS"] == "2"
    for scaled in render.of_kind("ScaledObject"):
        # More consumers than partitions would idle.
        assert scaled["spec"]["maxReplicaCount"] <= settings.topic_partitions_default


def _acls(user: dict[str, Any], operation: str) -> set[str]:
    return {
        acl["resource"]["name"]
        for acl in user["spec"]["authorization"]["acls"]
        if acl["resource"]["type"] == "topic" and operation in acl["operations"]
    }


def _grants(user: dict[str, Any]) -> set[tuple[str, str, str, frozenset[str]]]:
    return {
        (
            acl["resource"]["type"],
            acl["resource"]["name"],
            acl["resource"]["patternType"],
            frozenset(acl["operations"]),
        )
        for acl in user["spec"]["authorization"]["acls"]
    }


def _expected(grants: Any) -> set[tuple[str, str, str, frozenset[str]]]:
    return {(g.resource, g.name, g.pattern, frozenset(g.operations)) for g in grants}


def test_kafka_users_may_read_what_their_service_consumes_and_partners_only_their_own_topics(
    render: Render,
) -> None:
    for service, topics in SUBSCRIBED.items():
        user = render.get("KafkaUser", service)
        assert _grants(user) == _expected(SERVICE_GRANTS[service]), service  # as the code grants locally
        assert _acls(user, "Read") == topics
        assert DLQ.name in _acls(user, "Write")
        assert not (_acls(user, "Write") & topics) - {PARTNER_PREFIX}  # members writes rejections there
        groups = {
            a["resource"]["name"]
            for a in user["spec"]["authorization"]["acls"]
            if a["resource"]["type"] == "group"
        }
        config = _config(render, service)
        assert all(config[f"{service.upper()}_CONSUMER_GROUP"].startswith(group) for group in groups)
        assert config["KAFKA_SASL_USERNAME"] == service
    partners = [u for u in render.of_kind("KafkaUser") if u["metadata"]["name"].startswith("partner-")]
    assert partners
    for partner in partners:
        organisation_id = partner["metadata"]["labels"]["techport.nl/partner"]
        assert partner["metadata"]["name"] == partner_principal(organisation_id)
        assert _grants(partner) == _expected(partner_grants(organisation_id))
        assert not _acls(partner, "Write") & {t.name for t in CATALOG}  # nothing of the platform's own


def test_only_the_gateway_is_reachable_from_outside(render: Render) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in render.of_kind("NetworkPolicy")}
    deny = policies["default-deny"]
    assert (
        set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    )
    [ingress] = render.of_kind("Ingress")
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "gateway"
    assert "cert-manager.io/cluster-issuer" in ingress["metadata"]["annotations"]
    # Members is asked for students' keys by matching and notifications (an internal route).
    callers = {"members": {"gateway", "matching", "notifications"}}
    for name in SUBSCRIBED:
        sources = [peer for rule in policies[name]["ingress"] for peer in rule["from"]]
        allowed = [{"app.kubernetes.io/name": caller} for caller in callers.get(name, {"gateway"})]
        assert all(
            peer.get("podSelector", {}).get("matchLabels") in allowed
            or peer.get("namespaceSelector", {}).get("matchLabels")
            == {"kubernetes.io/metadata.name": "monitoring"}
            for peer in sources
        ), name
        ports = {port["port"] for rule in policies[name]["egress"] for port in rule.get("ports", [])}
        assert ports <= {53, 9093, 5432, 587, 465, 8080}  # 8080: members, for students' keys
        assert (8080 in ports) == (name in ("matching", "notifications"))
        assert (587 in ports) == (name == "notifications")


def test_checkov_finds_no_failed_check(tmp_path: Path) -> None:
    rendered = tmp_path / "rendered"  # not under .tools: checkov skips hidden folders
    rendered.mkdir()
    for overlay in ("dev", "prod"):
        from tests.deploy.conftest import K8S, kustomize_build

        (rendered / f"{overlay}.yaml").write_text(kustomize_build(K8S / "overlays" / overlay))
    reports = [_checkov("--directory", str(rendered)), _checkov("--file", str(REPO / "Dockerfile"))]
    summary = {r["check_type"]: r["summary"] for r in reports}
    failed = [
        (check["check_id"], check["resource"], check.get("file_path"))
        for r in reports
        for check in r["results"].get("failed_checks", [])
    ]
    assert not failed, failed
    # It did look: both frameworks ran their checks.
    assert summary["kubernetes"]["passed"] > 300 and summary["dockerfile"]["passed"] > 10, summary


def _checkov(*target: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            "uv", "tool", "run", "--from", "checkov==3.3.30", "checkov",
            "--config-file", str(REPO / "deploy" / "checkov.yaml"), *target,
            "--output", "json", "--quiet", "--compact",
        ],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert isinstance(report, dict) and "check_type" in report, (result.stdout[:500], result.stderr[-1000:])
    return report


def test_every_checkov_skip_has_a_reason() -> None:
    text = (REPO / "deploy" / "checkov.yaml").read_text()
    skips = yaml.safe_load(text)["skip-check"]
    assert skips
    for skip in skips:
        assert re.search(rf"- {skip}\s+# \S", text), f"{skip} has no reason"
