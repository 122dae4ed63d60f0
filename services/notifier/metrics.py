"""Prometheus metrics of the notifier.

`municipality` is the CBS GM code of the alert. The two latency histograms start at the
acceptance time ingest put on the event (Kafka header `hub-accepted-at`, carried by the
matcher onto the alert): `hub_event_to_alert_seconds` ends when the alert version that event
produced is committed to PostgreSQL, `hub_event_to_delivery_seconds` when its notice is
delivered (inbox: that same commit, once per team the version is routed to, new or updated;
webhook and e-mail: when the outbox marks it delivered). Only `raised` and `updated` notices
of the version the event produced are observed: an `overdue` notice is no consequence of an
event. What a transaction counts is counted once it committed, never by a retried attempt.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.shared.region import MUNICIPALITIES

REGISTRY = CollectorRegistry()

#: From 50 ms to an hour: seconds when all runs, minutes when a service was down.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
CHANNELS = ("inbox", "webhook", "email")

ALERTS_STORED = Counter(
    "hub_notifier_alerts_stored",
    "Alert versions written to PostgreSQL (new or newer), by rule and municipality code",
    ["rule", "municipality"],
    registry=REGISTRY,
)
EVENT_TO_ALERT = Histogram(
    "hub_event_to_alert_seconds",
    "Seconds from ingest accepting an event to the alert version it produced being stored",
    ["rule"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
EVENT_TO_DELIVERY = Histogram(
    "hub_event_to_delivery_seconds",
    "Seconds from ingest accepting an event to the notice of its alert version being "
    "delivered, by channel (inbox, webhook, email)",
    ["channel"],
    buckets=LATENCY_BUCKETS,
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


def initialise() -> None:
    """Creates the series of the closed label sets at 0, so they exist before the first alert."""
    DEADLETTERED.labels("undecodable")
    for channel in CHANNELS:
        EVENT_TO_DELIVERY.labels(channel)
        for status in ("delivered", "failed"):
            DELIVERIES.labels(channel, status)
    for channel in ("webhook", "email"):
        for status in ("delivered", "retry", "failed"):
            DELIVERY_ATTEMPTS.labels(channel, status)
    for via in ("wijk", "municipality", "fallback"):
        ALERTS_ROUTED.labels(via)
    for municipality in MUNICIPALITIES:
        ALERTS_FALLBACK.labels(municipality)
