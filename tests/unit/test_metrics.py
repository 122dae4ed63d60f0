"""Every service's metrics follow the Prometheus conventions the dashboards rely on: a `hub_`
prefix, counters ending in `_total`, time in `_seconds`, and only bounded labels (never a
household, person, alert or event id). And the correlation id is read as documented."""

from __future__ import annotations

import re
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from services.ingest import metrics as ingest
from services.ingest.registry import ALLOWED_TYPES
from services.matcher import metrics as matcher
from services.notifier import metrics as notifier
from services.shared.correlation import (
    ACCEPTED_AT_HEADER,
    CORRELATION_HEADER,
    Trace,
    correlation_id_or_new,
    read_trace,
    valid_correlation_id,
)

ALLOWED_LABELS = {
    "event_type",
    "partner_type",
    "channel",
    "reason",
    "rule",
    "municipality",
    "outcome",
    "status",
    "group",
    "topic",
    "partition",
    "version",
    "ruleset",
    "ruleset_version",
    "limit",
    "team",
    "action",
    "via",
    "kind",
}
SERVICES = {"ingest": ingest, "matcher": matcher, "notifier": notifier}


def declared(registry: CollectorRegistry) -> list[MetricWrapperBase]:
    # The registry's own list of collectors: labelled metrics without a series yet have
    # no samples to read their labels from.
    return [c for c in registry._collector_to_names if isinstance(c, MetricWrapperBase)]


@pytest.mark.parametrize("service", SERVICES)
def test_metrics_have_only_bounded_labels_and_conventional_names(service: str) -> None:
    module: ModuleType = SERVICES[service]
    found = declared(module.REGISTRY)
    assert found, f"{service} declares no metrics"
    for metric in found:
        name = metric._name
        labels = set(metric._labelnames)
        assert name.startswith("hub_"), name
        assert labels <= ALLOWED_LABELS, f"{name}: {sorted(labels - ALLOWED_LABELS)}"
        kind = metric._type
        if kind in {"histogram", "summary"}:
            assert name.endswith("_seconds"), f"{name}: a duration is measured in seconds"
        assert not any(unit in name for unit in ("_ms", "millis", "_minutes", "_hours")), name
    for family in text_string_to_metric_families(generate_latest(module.REGISTRY).decode()):
        if family.type == "counter":
            counted = {s.name for s in family.samples if not s.name.endswith("_created")}
            assert counted <= {f"{family.name}_total"}, family.name


def test_the_exposed_names_are_the_ones_the_dashboards_use() -> None:
    ingest.initialise(ALLOWED_TYPES)
    matcher.initialise(["twente-match"])
    notifier.initialise()
    notifier.ALERTS_STORED.labels("twente-match", "GM0153")
    notifier.EVENT_TO_ALERT.labels("twente-match")
    ingest.CONSUMER_LAG.labels("hub-matcher", "hub.debt-signal.v1", "0").set(0)
    ingest.CONSUMER_POSITION.labels("hub-matcher", "hub.debt-signal.v1", "0").set(0)
    exposed = {
        s.name: set(s.labels)
        for module in SERVICES.values()
        for family in text_string_to_metric_families(generate_latest(module.REGISTRY).decode())
        for s in family.samples
    }
    expected = {
        "hub_ingest_events_offered_total": {"event_type", "partner_type", "channel"},
        "hub_ingest_events_accepted_total": {"event_type", "partner_type", "channel"},
        "hub_ingest_events_duplicate_total": {"event_type", "channel"},
        "hub_ingest_events_rejected_total": {"event_type", "reason", "channel"},
        "hub_ingest_intake_deadlettered_total": {"reason"},
        "hub_kafka_consumer_lag": {"group", "topic", "partition"},
        "hub_kafka_consumer_position": {"group", "topic", "partition"},
        "hub_matcher_events_processed_total": {"event_type"},
        "hub_matcher_events_deadlettered_total": {"reason"},
        "hub_alerts_raised_total": {"rule", "municipality"},
        "hub_alerts_escalated_total": {"rule", "municipality"},
        "hub_matcher_alerts_closed_total": {"rule", "outcome"},
        "hub_notifier_alerts_stored_total": {"rule", "municipality"},
        "hub_notifier_deliveries_total": {"channel", "status"},
        "hub_notifier_delivery_attempts_total": {"channel", "status"},
        "hub_notifier_alerts_deadlettered_total": {"reason"},
        "hub_event_to_alert_seconds_count": {"rule"},
        "hub_event_to_alert_seconds_bucket": {"rule", "le"},
        "hub_event_to_delivery_seconds_count": {"channel"},
        "hub_event_to_delivery_seconds_bucket": {"channel", "le"},
    }
    for name, labels in expected.items():
        assert exposed.get(name) == labels, name


def test_closed_label_sets_exist_at_zero_from_start_up() -> None:
    ingest.initialise(ALLOWED_TYPES)
    notifier.initialise()
    text = generate_latest(ingest.REGISTRY).decode() + generate_latest(notifier.REGISTRY).decode()
    for series in (
        'hub_ingest_events_offered_total{channel="kafka",event_type="wvggz-report",'
        'partner_type="GGD_MELDFUNCTIE"}',
        'hub_ingest_events_rejected_total{channel="upload",event_type="debt-signal",'
        'reason="invalid"}',
        'hub_ingest_intake_deadlettered_total{reason="unknown-partner"}',
        'hub_notifier_deliveries_total{channel="webhook",status="failed"}',
        'hub_event_to_delivery_seconds_count{channel="email"}',
    ):
        assert series in text, series
    # Not for a partner type that may not publish the type: that series would stay empty.
    assert 'event_type="wvggz-report",partner_type="HUUR"' not in text


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("0b8e5a2c-4f1d-4c3e-9a7b-2d6f8e1c5a90", "0b8e5a2c-4f1d-4c3e-9a7b-2d6f8e1c5a90"),
        ("0B8E5A2C-4F1D-4C3E-9A7B-2D6F8E1C5A90", "0b8e5a2c-4f1d-4c3e-9a7b-2d6f8e1c5a90"),
        ("0B8E5A2C4F1D4C3E9A7B2D6F8E1C5A90", "0b8e5a2c4f1d4c3e9a7b2d6f8e1c5a90"),
        # Free text is replaced: it could be personal data bound to every log line.
        ("order-4711/2025", None),
        ("111222333", None),  # a valid BSN
        ("j.jansen@example.nl", None),
        ("jansen-1980-01-01", None),
        ("x" * 32, None),
        ("0b8e5a2c-4f1d-4c3e-9a7b-2d6f8e1c5a9", None),
        ("0b8e5a2c4f1d-4c3e-9a7b-2d6f8e1c5a90", None),
        ("{0b8e5a2c-4f1d-4c3e-9a7b-2d6f8e1c5a90}", None),
        ("0b8e5a2c-4f1d-4c3e-9a7b-2d6f8e1c5a90\n", None),
        ("", None),
        ("naïve", None),
    ],
)
def test_a_partner_correlation_id_is_kept_only_when_it_is_a_uuid(
    given: str, kept: str | None
) -> None:
    assert valid_correlation_id(given) == kept
    assert valid_correlation_id(given.encode()) == kept
    chosen = correlation_id_or_new(given)
    if kept is not None:
        assert chosen == kept
    else:
        assert re.fullmatch("[0-9a-f]{32}", chosen) and chosen != given


def test_the_trace_goes_through_kafka_headers_and_nonsense_is_dropped() -> None:
    cid = "5f0c3a1e9b7d4e2f8a6c1b3d5e7f9a0b"
    headers = Trace(cid, 1_760_000_000.25).headers()
    assert dict(headers) == {
        CORRELATION_HEADER: cid.encode(),
        ACCEPTED_AT_HEADER: b"1760000000.250000",
    }
    assert read_trace(headers) == Trace(cid, 1_760_000_000.25)
    assert read_trace(dict(headers)) == Trace(cid, 1_760_000_000.25)  # faust's shape
    assert read_trace([(ACCEPTED_AT_HEADER, b"nan"), (CORRELATION_HEADER, b"\xff")]) == Trace()
    assert read_trace([(CORRELATION_HEADER, b"111222333")]) == Trace()
    assert read_trace(None) == Trace()
    assert Trace(None, 100.0).seconds_since_accepted(now=102.5) == 2.5
