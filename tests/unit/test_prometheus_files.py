"""deploy/prometheus and deploy/grafana hold together: promtool accepts the configuration and
the rules, the rules' unit tests pass, every dashboard panel queries the provisioned data
source, and every metric a query names is one a service's registry defines."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from services.ingest import metrics as ingest_metrics
from services.matcher import metrics as matcher_metrics
from services.notifier import metrics as notifier_metrics
from tests.monitoring import (
    ALERT_NAMES,
    DASHBOARDS_DIR,
    DATASOURCE_UID,
    HUB_JOBS,
    PROMETHEUS_DIR,
    REPO,
    Query,
    dashboard_files,
    metric_names,
    operands,
    panel_queries,
    panels,
    rule_files,
    rule_queries,
    rule_test_files,
    rules,
    tool,
)

#: Series Prometheus makes itself: `up` per target, `ALERTS` per firing rule.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
RUNBOOK = (REPO / "docs" / "operations.md").read_text()
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """The sample names a registry exposes, also of labelled metrics that have no series yet."""
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in SUFFIXES.get(family.type, ("",))
    }


def known_names() -> set[str]:
    services = (ingest_metrics, matcher_metrics, notifier_metrics)
    names = set().union(*(exposed_names(m.REGISTRY) for m in services))
    recorded = {rule["record"] for _, rule in rules() if "record" in rule}
    return names | recorded | PROMETHEUS_SERIES


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_promtool_accepts_the_configuration_and_its_rule_files() -> None:
    done = promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    # check config also checks the rule files it names: all of rules/ must be among them.
    for path in rule_files():
        assert f"Checking {path}" in done.stdout, done.stdout


def test_promtool_accepts_the_rules() -> None:
    assert rule_files()
    done = promtool("check", "rules", *rule_files())
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_rules_unit_tests_pass() -> None:
    assert rule_test_files()
    done = promtool("test", "rules", *rule_test_files())
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_rule_fires_and_stays_quiet_in_the_unit_tests() -> None:
    """Each alert has a test that expects it to fire, and one that expects silence."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in rule_test_files():
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing >= set(ALERT_NAMES)
    assert quiet >= set(ALERT_NAMES)


def test_the_alert_rules_are_named_labelled_and_linked_to_the_runbook() -> None:
    alerts = {rule["alert"]: rule for _, rule in rules() if "alert" in rule}
    assert set(alerts) == set(ALERT_NAMES)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        assert annotations["runbook_url"] == f"docs/operations.md#{name.lower()}"
        assert f"\n### {name}\n" in RUNBOOK, f"docs/operations.md has no section for {name}"
        assert operands(rule["expr"]), f"{name} has no vector operand the live test can query"


def test_the_scrape_jobs_are_the_hubs_services_and_prometheus() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {*HUB_JOBS, "prometheus"}
    assert jobs["hub-ingest"]["static_configs"][0]["targets"] == ["ingest:8001"]
    assert jobs["hub-notifier"]["static_configs"][0]["targets"] == ["notifier:8003"]
    # Every matcher replica: each address the service name resolves to.
    assert jobs["hub-matcher"]["dns_sd_configs"] == [
        {"names": ["matcher"], "type": "A", "port": 8002, "refresh_interval": "15s"}
    ]


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_every_dashboard_panel_queries_the_prometheus_data_source(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    found = list(panels(dashboard))
    assert found, path.name
    for panel in found:
        title = panel.get("title")
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, title
        targets = panel.get("targets", [])
        assert targets, f"{path.name}: panel {title!r} has no query"
        for target in targets:
            assert target["expr"].strip(), f"{path.name}: panel {title!r} has an empty query"
            assert target["datasource"]["uid"] == DATASOURCE_UID, title
            # A fixed rate window misses samples at one zoom and smooths at another.
            if "rate(" in target["expr"] and "$__range" not in target["expr"]:
                assert "[$__rate_interval]" in target["expr"], f"{title}: {target['expr']}"
    ids = [panel["id"] for panel in found]
    assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"


def test_the_dashboards_cover_what_operators_look_at() -> None:
    exprs = " ".join(q.expr for q in panel_queries())
    for metric in (
        "hub_ingest_events_offered_total",
        "hub_ingest_events_accepted_total",
        "hub_alerts_raised_total",
        "hub_notifier_deliveries_total",
        "hub_event_to_alert_seconds_bucket",
        "hub_event_to_delivery_seconds_bucket",
        "hub_kafka_consumer_lag",
        "hub_ingest_intake_deadlettered_total",
        "hub_matcher_events_deadlettered_total",
        "hub_notifier_alerts_deadlettered_total",
    ):
        assert metric in exprs, metric
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs


def test_grafana_provisions_the_data_source_and_the_dashboards_by_file() -> None:
    provisioning = DASHBOARDS_DIR.parent / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = source["datasources"]
    assert datasource["uid"] == DATASOURCE_UID
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    boards = yaml.safe_load((provisioning / "dashboards" / "hub.yml").read_text())
    (provider,) = boards["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def every_query() -> list[Query]:
    return panel_queries() + rule_queries()


@pytest.mark.parametrize("query", every_query(), ids=str)
def test_every_metric_a_query_names_is_one_a_service_defines(query: Query) -> None:
    names = metric_names(query.expr)
    assert names, f"{query}: names no metric"
    unknown = names - known_names()
    assert not unknown, f"{query}: no service defines {sorted(unknown)}"


def test_a_misspelt_metric_name_is_caught() -> None:
    """The check above can fail: it sees a typo, and the suffix a histogram does not have."""
    known = known_names()
    assert metric_names("sum(rate(hub_ingest_events_acepted_total[5m]))") - known
    assert metric_names("rate(hub_event_to_alert_seconds_total[5m])") - known
    assert not metric_names('histogram_quantile(0.5, sum by (le) (rate(x_bucket{a="b"}[5m])))') - {
        "x_bucket"
    }


def test_an_alert_expression_splits_into_its_vector_operands() -> None:
    assert operands('sum(rate(a_total{x=~"p|q"}[10m])) > 0 unless sum(rate(b_total[10m])) > 0') == [
        'sum(rate(a_total{x=~"p|q"}[10m]))',
        "sum(rate(b_total[10m]))",
    ]
    assert operands("up == 0") == ["up"]
    assert operands("a or b >= bool 2") == ["a", "b"]
    assert operands("a > 0 or on (x, y) b > 0") == ["a", "b"]
    assert operands("a / on (x) group_left (y) b") == ["a / on (x) group_left (y) b"]
    assert operands("a == ignoring (x) group_right c") == ["a", "c"]
    assert operands('up{job="m"} == 0 or absent(up{job="m"})') == ['up{job="m"}', 'up{job="m"}']
