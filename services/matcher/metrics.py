"""Prometheus metrics of the matcher.

`municipality` is the CBS GM code of the alert (the municipality of its newest event).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.shared.events import EventType
from services.shared.outcomes import OUTCOMES
from services.shared.region import MUNICIPALITIES

REGISTRY = CollectorRegistry()

EVENTS_PROCESSED = Counter(
    "hub_matcher_events_processed",
    "Source events the matcher has correlated, by event type",
    ["event_type"],
    registry=REGISTRY,
)
EVENTS_DUPLICATE = Counter(
    "hub_matcher_events_duplicate",
    "Re-sent events (same partner and partner event id) that counted once, by event type",
    ["event_type"],
    registry=REGISTRY,
)
DEADLETTERED = Counter(
    "hub_matcher_events_deadlettered",
    "Records sent to the dead-letter topic, by reason",
    ["reason"],
    registry=REGISTRY,
)
ALERTS_RAISED = Counter(
    "hub_alerts_raised",
    "New alerts raised, by rule and municipality code (CBS GM code of the alert)",
    ["rule", "municipality"],
    registry=REGISTRY,
)
ALERTS_ESCALATED = Counter(
    "hub_alerts_escalated",
    "Open alerts that new events joined (a new version), by rule and municipality code",
    ["rule", "municipality"],
    registry=REGISTRY,
)
EVENTS_EXPIRED = Counter(
    "hub_matcher_events_expired",
    "Events dated before their domain's retention cutoff, not counted, by event type",
    ["event_type"],
    registry=REGISTRY,
)
EVENTS_PURGED = Counter(
    "hub_matcher_events_purged",
    "Events removed from households' state by retention purges",
    registry=REGISTRY,
)
PRIVACY_COMMANDS = Counter(
    "hub_matcher_privacy_commands",
    "Privacy commands applied (ERASE, PURGE, REKEY, MERGE), by kind",
    ["kind"],
    registry=REGISTRY,
)
ALERTS_SUPPRESSED = Counter(
    "hub_alerts_suppressed",
    "Times a rule held again for a household during a closed alert's cool-down, by rule",
    ["rule"],
    registry=REGISTRY,
)
ALERTS_CLOSED = Counter(
    "hub_matcher_alerts_closed",
    "Alert outcomes that closed an open alert in the matcher's state, by rule and outcome",
    ["rule", "outcome"],
    registry=REGISTRY,
)
RULES_LOADED = Gauge(
    "hub_matcher_rule_info",
    "The rules the matcher runs: 1 per rule, with its version and the rules file's version",
    ["rule", "version", "ruleset", "ruleset_version"],
    registry=REGISTRY,
)
OUTCOMES_IGNORED = Counter(
    "hub_matcher_outcomes_ignored",
    "Alert outcomes that closed nothing, by reason: the household has no state (erased or "
    "never seen), the rule is not in the rules file, or the alert is not open (a re-send)",
    ["reason"],
    registry=REGISTRY,
)

#: Why the matcher dead-letters a record (services/matcher/app.py).
DEADLETTER_REASONS = (
    "undecodable",
    "not-a-source-event",
    "key-mismatch",
    "future-event",
    "unknown-outcome",
)


def initialise(rule_ids: Iterable[str]) -> None:
    """Creates the series of the closed label sets at 0, so they exist before the first event."""
    for event_type in EventType:
        EVENTS_PROCESSED.labels(event_type.value)
        EVENTS_DUPLICATE.labels(event_type.value)
        EVENTS_EXPIRED.labels(event_type.value)
    for reason in DEADLETTER_REASONS:
        DEADLETTERED.labels(reason)
    for reason in ("unknown-household", "unknown-rule", "not-open"):
        OUTCOMES_IGNORED.labels(reason)
    for kind in ("ERASE", "PURGE", "REKEY", "MERGE"):
        PRIVACY_COMMANDS.labels(kind)
    for rule in rule_ids:
        ALERTS_SUPPRESSED.labels(rule)
        for municipality in MUNICIPALITIES:
            ALERTS_RAISED.labels(rule, municipality)
            ALERTS_ESCALATED.labels(rule, municipality)
        for outcome in OUTCOMES:
            ALERTS_CLOSED.labels(rule, outcome)
