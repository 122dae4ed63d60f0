"""Prometheus metrics of the notifier."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry()

ALERTS_STORED = Counter(
    "hub_notifier_alerts_stored",
    "Alert versions written to PostgreSQL (new or newer), by rule",
    ["rule"],
    registry=REGISTRY,
)
ALERTS_STALE = Counter(
    "hub_notifier_alerts_stale",
    "Alert messages ignored because PostgreSQL already held that version or a newer one",
    ["rule"],
    registry=REGISTRY,
)
DEADLETTERED = Counter(
    "hub_notifier_alerts_deadlettered",
    "Alert records that could not be decoded, by reason",
    ["reason"],
    registry=REGISTRY,
)
CONTACT_VIEWS = Counter(
    "hub_notifier_contact_views",
    "Views of alerts' decrypted contact details (each one is in the access log), by rule",
    ["rule"],
    registry=REGISTRY,
)
ALERT_ACTIONS = Counter(
    "hub_notifier_alert_actions",
    "Team actions on alerts (claim, outcome), by action and rule",
    ["action", "rule"],
    registry=REGISTRY,
)
OUTCOMES_PUBLISHED = Counter(
    "hub_notifier_outcomes_published",
    "Alert outcomes published on the alert-outcomes topic, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
ALERTS_OVERDUE = Counter(
    "hub_alerts_overdue",
    "Open alerts whose deadline passed (each counted once), by rule and municipality code",
    ["rule", "municipality"],
    registry=REGISTRY,
)
