"""Metrics follow Prometheus conventions, and every alert and dashboard panel asks for metrics the services
really export (a renamed metric would otherwise silence an alert without anyone noticing)."""

from __future__ import annotations

import json
import re

import techport_matching.metrics
import techport_members.metrics
import techport_notifications.metrics
import techport_shared.metrics
import techport_shared.web
import yaml
from prometheus_client import REGISTRY

from tests.deploy.conftest import K8S

assert techport_matching.metrics and techport_members.metrics and techport_notifications.metrics
assert techport_shared.metrics

SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported() -> dict[str, str]:
    """Every series name a Techport service can expose, with its metric type."""
    names = {}
    for family in REGISTRY.collect():
        if family.name.startswith("techport_"):
            for suffix in SUFFIXES[family.type]:
                names[family.name + suffix] = family.type
    return names


def test_metric_names_follow_prometheus_conventions() -> None:
    families = {f.name: f for f in REGISTRY.collect() if f.name.startswith("techport_")}
    assert "techport_consumer_lag" in families and "techport_dlq_records" in families
    for name, family in families.items():
        assert re.fullmatch(r"techport_[a-z0-9_]+", name), name
        assert family.documentation, f"{name} has no help text"
        if family.type == "histogram" and ("seconds" in name or "time" in family.documentation.lower()):
            assert name.endswith("_seconds"), f"{name}: a duration is measured in seconds"
        assert not name.endswith("_total") or family.type == "counter", name
    assert {"service", "topic", "error"} <= set(_labels("techport_dlq_records_total"))
    assert {"service", "group", "topic", "partition"} == set(_labels("techport_consumer_lag"))
    assert {"service"} == set(_labels("techport_outbox_backlog"))


def _labels(series: str) -> tuple[str, ...]:
    for collector in list(REGISTRY._collector_to_names):  # the registry keeps no public index by name
        if series in REGISTRY._collector_to_names[collector]:
            return tuple(getattr(collector, "_labelnames", ()))
    raise AssertionError(f"{series} is not registered")


def _series_in(expression: str) -> set[str]:
    return set(re.findall(r"\btechport_[a-z0-9_]+", expression))


def test_every_alert_asks_for_exported_metrics() -> None:
    rule = yaml.safe_load((K8S / "base" / "monitoring" / "alerts.yaml").read_text())
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    alerts = {r["alert"] for r in rules}
    assert {
        "TechportConsumerLagHigh",
        "TechportDeadLettersGrowing",
        "TechportOutboxBacklog",
        "TechportEmailFailures",
        "TechportHttp5xxRate",
    } <= alerts
    names = exported()
    for r in rules:
        used = _series_in(r["expr"])
        assert used and used <= set(names), (r["alert"], used - set(names))


def test_every_dashboard_panel_asks_for_exported_metrics() -> None:
    dashboard = json.loads((K8S / "base" / "monitoring" / "dashboards" / "event-flow.json").read_text())
    names = exported()
    targets = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(targets) >= 12
    for target in targets:
        used = _series_in(target["expr"])
        assert used and used <= set(names), (target["expr"], used - set(names))
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
