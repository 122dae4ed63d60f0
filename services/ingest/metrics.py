"""Prometheus metrics of the ingest service.

`channel` is how the event came in: `http` (one event), `batch`, `upload` (CSV) or `kafka`
(intake topics). Per channel, offered events = accepted + duplicate + rejected.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry()

EVENTS_ACCEPTED = Counter(
    "hub_ingest_events_accepted",
    "Events accepted and published for the first time, by event type, partner type and channel",
    ["event_type", "partner_type", "channel"],
    registry=REGISTRY,
)
EVENTS_DUPLICATE = Counter(
    "hub_ingest_events_duplicate",
    "Repeats of events accepted before: answered as accepted, not published again",
    ["event_type", "channel"],
    registry=REGISTRY,
)
EVENTS_REJECTED = Counter(
    "hub_ingest_events_rejected",
    "Events refused and not published, by event type, reason and channel",
    ["event_type", "reason", "channel"],
    registry=REGISTRY,
)
REQUESTS_LIMITED = Counter(
    "hub_ingest_requests_limited",
    "Requests refused by a limit (rate, body size, batch size), by limit",
    ["limit"],
    registry=REGISTRY,
)
UPLOADS = Counter(
    "hub_ingest_uploads",
    "CSV uploads by how they ended: done, failed or interrupted",
    ["event_type", "status"],
    registry=REGISTRY,
)
UPLOADS_ACTIVE = Gauge(
    "hub_ingest_uploads_active",
    "CSV uploads this ingest instance is processing now",
    registry=REGISTRY,
)
DEADLETTERED = Counter(
    "hub_ingest_intake_deadlettered",
    "Kafka intake records sent to the intake dead-letter topic, by reason",
    ["reason"],
    registry=REGISTRY,
)
