"""Debian's real Prometheus scrapes the three running services and evaluates the repository's
rules; every dashboard panel query and every rule expression returns data, so no panel is
empty by a typo and no alert watches a series that does not exist."""

from __future__ import annotations

import contextlib
import math
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.cli.infra import end_process, free_port
from services.cli.peers import WebhookReceiver
from tests.integration.fixtures import UNCOVERED, Hub, wait_for
from tests.integration.test_delivery import apply_teams, deliveries, twente_match, webhook_team
from tests.monitoring import (
    ALERT_NAMES,
    HUB_JOBS,
    Query,
    metric_names,
    panel_queries,
    rule_files,
    rule_queries,
    tool,
)

pytestmark = pytest.mark.integration

#: What Grafana would put in for its variables with 1 s scrapes: a rate window that holds many
#: samples and outlasts the test, and a dashboard time range of an hour.
VARIABLES = {"$__rate_interval": "5m", "$__range": "1h"}
#: A wijk of its own, so the given-up webhook deliveries are this test's.
BROKEN_WIJK = "WK015377"
READY_S = 60.0
QUERY_S = 90.0


@dataclass
class Prometheus:
    url: str
    client: httpx.Client

    def query(self, expr: str) -> list[dict[str, Any]]:
        response = self.client.get(f"{self.url}/api/v1/query", params={"query": expr})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def scrape_config(hub: Hub, own: str, rules: list[Path]) -> dict[str, Any]:
    """The repository's configuration for this machine: the same job names, the services'
    loopback ports, 1 s scrapes and rule evaluations."""
    port = {name: hub.stack.ports[name] for name in ("ingest", "matcher", "notifier")}
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rules],
        "scrape_configs": [
            {"job_name": "prometheus", "static_configs": [{"targets": [own]}]},
            *(
                {
                    "job_name": f"hub-{name}",
                    "static_configs": [{"targets": [f"127.0.0.1:{port[name]}"]}],
                }
                for name in port
            ),
        ],
    }


@pytest.fixture(scope="module")
def prometheus(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus")
    address = f"127.0.0.1:{free_port()}"
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(hub, address, rule_files())))
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={address}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://{address}"
    try:
        with httpx.Client(timeout=10) as client:

            def ready() -> bool:
                assert process.poll() is None, (workdir / "prometheus.log").read_text()[-3000:]
                try:
                    return client.get(f"{url}/-/ready").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, "Prometheus to be ready", READY_S)
            yield Prometheus(url, client)
    finally:
        end_process(process, 30)
        log.close()


@pytest.fixture(scope="module")
def traffic(hub: Hub, prometheus: Prometheus, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Events that make alerts and deliveries of every kind the dashboards show: a household
    in Enschede (the regional team's inbox), one in a municipality only the fallback team
    covers, and one whose team's webhook never answers, so its delivery is given up."""
    secret = secrets.token_urlsafe(32)
    with WebhookReceiver(secret.encode(), always_fail=True) as broken:
        team = webhook_team("wijk-meetpunt", BROKEN_WIJK, broken)
        apply_teams(hub, tmp_path_factory.mktemp("teams"), [team], HOOK_SECRET=secret)
        twente_match(hub, "WK015301")
        # The notifier makes a rule's latency series with its first observation, which rate()
        # cannot tell from the series' start: the next alerts must come after Prometheus has
        # seen it (in a whole test run other tests' alerts may have made it already).
        wait_for(
            lambda: prometheus.query('hub_event_to_alert_seconds_count{rule="twente-match"}'),
            "Prometheus to scrape the first event-to-alert observation",
            QUERY_S,
        )
        twente_match(hub, "WK173501", municipality=UNCOVERED)
        # Likewise the team's give-up series, which the notifier's sweep starts at 0: the
        # give-up is an increase only after Prometheus has seen that 0 (a scrape that timed
        # out on CI's busy cores once left the 1 the first value it saw).
        wait_for(
            lambda: prometheus.query('hub_notifier_deliveries_gave_up_total{team="wijk-meetpunt"}'),
            "Prometheus to scrape the broken team's give-up series at 0",
            QUERY_S,
        )
        given_up = twente_match(hub, BROKEN_WIJK)

        def failed() -> bool:
            return any(row[1] == "failed" for row in deliveries(hub, given_up))

        wait_for(failed, "the broken webhook's delivery to be given up")


def test_prometheus_scrapes_the_three_services_and_loads_the_alert_rules(
    prometheus: Prometheus,
) -> None:
    def all_up() -> list[dict[str, Any]] | None:
        targets = prometheus.client.get(f"{prometheus.url}/api/v1/targets").json()
        active = targets["data"]["activeTargets"]
        hub_targets = [t for t in active if t["labels"]["job"] in HUB_JOBS]
        healthy = {t["labels"]["job"] for t in hub_targets if t["health"] == "up"}
        return hub_targets if healthy == set(HUB_JOBS) else None

    wait_for(all_up, "every hub job scraped", QUERY_S)

    groups = prometheus.client.get(f"{prometheus.url}/api/v1/rules").json()["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(ALERT_NAMES) <= set(loaded)

    def evaluated() -> bool:
        groups = prometheus.client.get(f"{prometheus.url}/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return all(rule.get("lastEvaluation", "").startswith("2") for rule in rules) and all(
            rule["health"] == "ok" for rule in rules
        )

    wait_for(evaluated, "every rule evaluated without error", QUERY_S)


def substituted(expr: str) -> str:
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
    return expr


def is_latency(expr: str) -> bool:
    return "histogram_quantile" in expr or "_seconds_sum" in expr


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


QUERIES = panel_queries() + rule_queries()


def good(query: Query, result: list[dict[str, Any]]) -> bool:
    """Data, and for a latency query a finite number (NaN: no observation in the window)."""
    return bool(result) and (not is_latency(query.expr) or finite(result))


@pytest.fixture(scope="module")
def answers(prometheus: Prometheus, traffic: None) -> dict[Query, list[dict[str, Any]]]:
    """Each query's last answer, all polled together until every one has data or QUERY_S has
    passed (so one empty query does not make the others wait out their time windows)."""
    answers: dict[Query, list[dict[str, Any]]] = {}

    def all_answered() -> bool:
        for query in QUERIES:
            if query not in answers or not good(query, answers[query]):
                answers[query] = prometheus.query(substituted(query.expr))
        return all(good(query, answers[query]) for query in QUERIES)

    # A timeout is no failure here: each test below names its own query that stayed empty.
    with contextlib.suppress(AssertionError):
        wait_for(all_answered, "every query to return data", QUERY_S)
    return answers


@pytest.mark.parametrize("query", QUERIES, ids=str)
def test_every_query_returns_data(answers: dict[Query, list[dict[str, Any]]], query: Query) -> None:
    result = answers[query]
    where = f"{query.file}: {query.where}: {substituted(query.expr)}"
    assert result, f"{where}: no data after {QUERY_S:.0f} s"
    if is_latency(query.expr):
        assert finite(result), f"{where}: no finite number after {QUERY_S:.0f} s: {result}"


#: What the traffic above moves: each panel query over these alone (no ratio) must show it.
MOVED = frozenset(
    {
        "hub_ingest_events_offered_total",
        "hub_ingest_events_accepted_total",
        "hub_matcher_events_processed_total",
        "hub_alerts_raised_total",
        "hub_notifier_alerts_stored_total",
        "hub_notifier_deliveries_total",
        "hub_notifier_delivery_attempts_total",
        "hub_notifier_deliveries_gave_up_total",
        "hub_alerts_fallback_total",
        "hub_event_to_alert_seconds_bucket",
        "hub_event_to_delivery_seconds_bucket",
    }
)
MOVING = [
    q
    for q in panel_queries()
    if " / " not in q.expr and metric_names(q.expr) and metric_names(q.expr) <= MOVED
]


@pytest.mark.parametrize("query", MOVING, ids=str)
def test_a_panel_of_what_the_traffic_moved_shows_it_move(
    prometheus: Prometheus, answers: dict[Query, list[dict[str, Any]]], query: Query
) -> None:
    """Data alone could be a counter the service started at 0; these panels must show more."""

    def moved() -> bool:
        answers[query] = prometheus.query(substituted(query.expr))
        return any(float(sample["value"][1]) > 0 for sample in answers[query])

    with contextlib.suppress(AssertionError):
        wait_for(moved, f"{query.where} to move", QUERY_S)
    assert moved(), f"{query.file}: {query.where}: only zeros: {answers[query]}"
