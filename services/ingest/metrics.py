"""Prometheus metrics of the ingest service, and the consumer lag of every hub group.

`channel` is how the event came in: `http` (one event), `batch`, `upload` (CSV) or `kafka`
(intake topics). Per channel, offered events = accepted + duplicate + rejected.

What counts as offered: an event of a partner that proved who it is (a known API key; on
Kafka, an active partner in the `hub-partner` header) and got as far as its events being
read. So a request refused as a whole offers no events: `401` (unknown key, counted in
`hub_ingest_requests_refused_total{reason="unauthenticated"}`), `403` (the partner may not
publish the type; the body is not read; `reason="forbidden-type"`), `413`, `429`, a batch
that is not a JSON array, an unusable CSV header. An intake record of an unknown partner is
no event offered either: it is dead-lettered and counted in
`hub_ingest_intake_deadlettered_total{reason="unknown-partner"}` only. Everything else that
is read (invalid, undecodable, forbidden, future-dated, conflicting) is offered and rejected.

`hub_kafka_consumer_lag` is refreshed by `services.ingest.lagwatch` for every consumer group
of the hub, not only ingest's own: ingest is the service that is up while events arrive, so
the lag of a stopped matcher still shows.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.shared.events import EventType

REGISTRY = CollectorRegistry()

CHANNELS = ("http", "batch", "upload", "kafka")
#: Why an event is rejected, per channel (the closed set; see intake.py and kafka_intake.py).
REJECT_REASONS = {
    "http": ("invalid", "bsn-not-allowed", "future-date", "conflict"),
    "batch": ("invalid", "bsn-not-allowed", "future-date", "conflict"),
    "upload": ("invalid", "bsn-not-allowed", "future-date", "conflict"),
    "kafka": (
        "invalid",
        "undecodable",
        "forbidden-type",
        "bsn-not-allowed",
        "future-date",
        "conflict",
    ),
}
DEADLETTER_REASONS = (
    "unknown-partner",
    "undecodable",
    "invalid",
    "forbidden-type",
    "bsn-not-allowed",
    "future-date",
    "conflict",
)

EVENTS_OFFERED = Counter(
    "hub_ingest_events_offered",
    "Events offered by authenticated partners, by event type, partner type and channel: "
    "accepted + duplicate + rejected",
    ["event_type", "partner_type", "channel"],
    registry=REGISTRY,
)
REQUESTS_REFUSED = Counter(
    "hub_ingest_requests_refused",
    "Requests refused before any event was read: unauthenticated (401) or forbidden-type (403)",
    ["reason"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "hub_kafka_consumer_lag",
    "Records written that the consumer group has not committed, by group, topic and partition",
    ["group", "topic", "partition"],
    registry=REGISTRY,
)
CONSUMER_POSITION = Gauge(
    "hub_kafka_consumer_position",
    "Offset up to which the consumer group has processed the partition (its committed offset, "
    "or the oldest record kept where it committed none); it stands still while the group is stuck",
    ["group", "topic", "partition"],
    registry=REGISTRY,
)
LAG_READ_FAILURES = Counter(
    "hub_kafka_consumer_lag_read_failures",
    "Rounds in which the consumer lag could not be read from Kafka (the gauge keeps its values)",
    registry=REGISTRY,
)

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


def initialise(allowed: Mapping[str, frozenset[EventType]]) -> None:
    """Creates the series of the closed label sets at 0, so they exist before the first event.
    `allowed`: partner type -> the event types it may publish."""
    for event_type in EventType:
        for channel in CHANNELS:
            EVENTS_DUPLICATE.labels(event_type.value, channel)
            for partner_type in sorted(p for p, types in allowed.items() if event_type in types):
                EVENTS_OFFERED.labels(event_type.value, partner_type, channel)
                EVENTS_ACCEPTED.labels(event_type.value, partner_type, channel)
            for reason in REJECT_REASONS[channel]:
                EVENTS_REJECTED.labels(event_type.value, reason, channel)
    for reason in DEADLETTER_REASONS:
        DEADLETTERED.labels(reason)
    for refusal in ("unauthenticated", "forbidden-type"):
        REQUESTS_REFUSED.labels(refusal)
    for limit in ("rate", "body-size", "batch-size", "upload-size"):
        REQUESTS_LIMITED.labels(limit)
