"""Prometheus metrics of the notifier."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

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
    "Team actions on alerts (claim, outcome, note), by action and rule",
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
ALERTS_ROUTED = Counter(
    "hub_notifier_alerts_routed",
    "Alerts routed to a team, by how the team was found (wijk, municipality, fallback)",
    ["via"],
    registry=REGISTRY,
)
ALERTS_FALLBACK = Counter(
    "hub_alerts_fallback",
    "Alerts no team of their municipality or wijk covers, routed to the fallback team, "
    "by municipality code",
    ["municipality"],
    registry=REGISTRY,
)
ALERTS_UNROUTED = Gauge(
    "hub_alerts_unrouted",
    "Open alerts that no team, not even a fallback team, can take (seen by the last sweep)",
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "hub_notifier_deliveries",
    "Notices delivered or given up, by channel (inbox, webhook, email) and status",
    ["channel", "status"],
    registry=REGISTRY,
)
DELIVERY_ATTEMPTS = Counter(
    "hub_notifier_delivery_attempts",
    "Delivery attempts, by channel and result (delivered, retry, failed)",
    ["channel", "status"],
    registry=REGISTRY,
)
DELIVERIES_GAVE_UP = Counter(
    "hub_notifier_deliveries_gave_up",
    "Deliveries given up after their last attempt or a permanent error: the operator warning",
    ["channel", "team"],
    registry=REGISTRY,
)
OPERATOR_WARNINGS = Counter(
    "hub_notifier_operator_warnings",
    "Operator warning e-mails sent about a team's failed deliveries (at most one a day)",
    ["team"],
    registry=REGISTRY,
)
