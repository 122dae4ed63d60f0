"""Prometheus metrics of the ingest service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry()

EVENTS_ACCEPTED = Counter(
    "hub_ingest_events_accepted",
    "Events accepted and published, by event type and partner type",
    ["event_type", "partner_type"],
    registry=REGISTRY,
)
EVENTS_REJECTED = Counter(
    "hub_ingest_events_rejected",
    "Events refused and not published, by event type and reason",
    ["event_type", "reason"],
    registry=REGISTRY,
)
