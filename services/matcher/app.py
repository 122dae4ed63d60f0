"""The matcher's Faust app: one agent over the four source topics, a per-household table.

The same agent reads the privacy commands and the alert outcomes: they are keyed and
partitioned like the events, so each household's events, commands and closings are
handled in order, one at a time.
"""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from structlog.contextvars import bound_contextvars

from services.matcher import metrics
from services.matcher.engine import Engine, Household, Outcome, merge, purge
from services.matcher.facts import Fact
from services.matcher.ruleset import load_ruleset
from services.matcher.settings import MatcherSettings
from services.shared.avro import AvroCodec
from services.shared.correlation import NO_TRACE, Trace, read_trace
from services.shared.errors import DecodeError
from services.shared.events import (
    ALERT_OUTCOME_SCHEMA_NAME,
    ALERT_SCHEMA_NAME,
    BY_SCHEMA_NAME,
    PRIVACY_COMMAND_SCHEMA_NAME,
    EventType,
)
from services.shared.logging import get_logger
from services.shared.outcomes import OUTCOMES
from services.shared.topics import (
    DEADLETTER_HEADERS,
    HOUSEHOLDS_TABLE,
    alert_outcomes_topic,
    alerts_topic,
    deadletter_headers,
    deadletter_topic,
    privacy_commands_topic,
    source_topic,
)

log = get_logger("hub.matcher")

#: Records on the agent's topics that are not source events.
_CONTROL = frozenset({PRIVACY_COMMAND_SCHEMA_NAME, ALERT_OUTCOME_SCHEMA_NAME})


def create_app(settings: MatcherSettings) -> faust.App:
    codec = AvroCodec(settings.schemas_dir)
    ruleset = load_ruleset(settings.matcher_rules_file)
    engine = Engine(ruleset.rules, future_tolerance_days=settings.future_tolerance_days)
    metrics.initialise(engine.rule_ids)
    for rule in ruleset.rules:
        metrics.RULES_LOADED.labels(rule.id, str(rule.version), ruleset.name, ruleset.version).set(
            1
        )
    log.info(
        "matcher.rules_loaded",
        ruleset=ruleset.name,
        version=ruleset.version,
        sha256=ruleset.digest,
        rules=ruleset.versions(),
    )
    app = faust.App(
        settings.matcher_app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        datadir=settings.matcher_data_dir,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.matcher_commit_interval_s,
        broker_rebalance_timeout=settings.matcher_rebalance_timeout_s,
        broker_session_timeout=settings.matcher_session_timeout_s,
        broker_heartbeat_interval=settings.matcher_session_timeout_s / 5,
        producer_acks=-1,
        web_host=settings.matcher_host,
        web_port=settings.matcher_port,
        web_in_thread=False,
        table_cleanup_interval=3600.0,
    )
    # Privacy commands and outcomes share the agent with the events: each household's in order.
    sources = app.topic(
        *(source_topic(settings, t) for t in EventType),
        privacy_commands_topic(settings),
        alert_outcomes_topic(settings),
        key_serializer="raw",
        value_serializer="raw",
    )
    commands = app.topic(
        privacy_commands_topic(settings), key_serializer="raw", value_serializer="raw"
    )
    alerts = app.topic(alerts_topic(settings), key_serializer="raw", value_serializer="raw")
    deadletters = app.topic(
        deadletter_topic(settings), key_serializer="raw", value_serializer="raw"
    )
    households = app.Table(
        HOUSEHOLDS_TABLE,
        default=None,
        # JSON keys and values: faust-streaming's changelog recovery ignores a table's schema
        # and decodes with the default (JSON) serializers.
        partitions=settings.topic_partitions,
    )

    async def dead_letter(event: faust.EventT[Any], reason: str, detail: str) -> None:
        message = event.message
        metrics.DEADLETTERED.labels(reason).inc()
        log.warning(
            "event.deadlettered",
            reason=reason,
            detail=detail,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )
        # The record's own headers stay (its trace): a replay sends it on with them.
        own = [(k, v) for k, v in event.headers.items() if k not in DEADLETTER_HEADERS]
        await deadletters.send(
            key=message.key,
            value=message.value,
            headers=own
            + deadletter_headers(reason, detail, message.topic, message.partition, message.offset),
        )

    async def handle(event: faust.EventT[Any]) -> None:
        # The correlation id and acceptance time ingest put on the event; each alert version
        # this event produces carries them on to the notifier.
        trace = read_trace(event.headers)
        with bound_contextvars(correlation_id=trace.correlation_id):
            await handle_traced(event, trace)

    async def handle_traced(event: faust.EventT[Any], trace: Trace) -> None:
        try:
            schema_name, record = codec.decode(event.value)
        except DecodeError as exc:
            await dead_letter(event, "undecodable", str(exc))
            return
        if schema_name not in BY_SCHEMA_NAME and schema_name not in _CONTROL:
            await dead_letter(event, "not-a-source-event", schema_name)
            return
        household_id: str = record["household_id"]
        if event.key != household_id.encode():
            await dead_letter(event, "key-mismatch", "record key is not the household_id")
            return
        if schema_name == PRIVACY_COMMAND_SCHEMA_NAME:
            await obey(household_id, record)
            return
        if schema_name == ALERT_OUTCOME_SCHEMA_NAME:
            await close(event, household_id, record)
            return
        fact = Fact.from_event(schema_name, record)
        household = load(household_id) or Household()
        outcome = engine.apply(household_id, household, fact)
        if outcome.rejected:
            await dead_letter(event, "future-event", outcome.rejected)
            return
        if outcome.expired:
            metrics.EVENTS_EXPIRED.labels(fact.event_type).inc()
        elif outcome.duplicate:
            metrics.EVENTS_DUPLICATE.labels(fact.event_type).inc()
        else:
            households[household_id] = household.to_json()
            metrics.EVENTS_PROCESSED.labels(fact.event_type).inc()
        await publish(household_id, household, outcome, trace)

    def load(household_id: str) -> Household | None:
        data = households.get(household_id)
        return Household.from_json(household_id, data) if data is not None else None

    async def close(event: faust.EventT[Any], household_id: str, record: dict[str, Any]) -> None:
        """A team closed an alert: its rule's cool-down starts (see engine.Engine.close)."""
        if record["outcome"] not in OUTCOMES:
            await dead_letter(event, "unknown-outcome", f"outcome {record['outcome']!r}")
            return
        household = load(household_id)
        if household is None:
            ignored = "unknown-household"  # erased, purged away, or never seen
        elif record["rule_id"] not in engine.rule_ids:
            ignored = "unknown-rule"  # a rule taken out of the rules file
        elif engine.close(
            household, record["rule_id"], record["alert_id"], record["closed_on"], record["outcome"]
        ):
            households[household_id] = household.to_json()
            metrics.ALERTS_CLOSED.labels(record["rule_id"], record["outcome"]).inc()
            return
        else:
            ignored = "not-open"  # closed already (a re-send) or an earlier episode
        metrics.OUTCOMES_IGNORED.labels(ignored).inc()
        log.info("outcome.ignored", reason=ignored, rule=record["rule_id"])

    async def publish(
        household_id: str, household: Household, outcome: Outcome, trace: Trace
    ) -> None:
        # `publish` holds every raised and escalated rule.
        records = engine.records(household_id, household, outcome.publish)
        where = {r["rule_id"]: r["municipality_code"] for r in records}
        for rule_id in outcome.raised:
            metrics.ALERTS_RAISED.labels(rule_id, where.get(rule_id, "unknown")).inc()
        for rule_id in outcome.escalated:
            metrics.ALERTS_ESCALATED.labels(rule_id, where.get(rule_id, "unknown")).inc()
        for rule_id in outcome.suppressed:
            metrics.ALERTS_SUPPRESSED.labels(rule_id).inc()
        headers = dict(trace.headers())
        for alert in records:
            await alerts.send(
                key=household_id.encode(),
                value=codec.encode(ALERT_SCHEMA_NAME, alert),
                headers=headers or None,
            )
            log.info(
                "alert.published",
                rule=alert["rule_id"],
                version=alert["version"],
                municipality=alert["municipality_code"],
            )

    async def obey(household_id: str, command: dict[str, Any]) -> None:
        """Erase, purge or move one household's state; deleting a key writes a tombstone."""
        kind: str = command["kind"]
        household = load(household_id)
        if kind == "MERGE":
            merged = household or Household()
            moved = Household.from_json(household_id, json.loads(command["state_json"]))
            joined = merge(merged, moved)
            # Events that arrived under the new pseudonym first now meet the moved ones.
            outcome = engine.evaluate(household_id, merged, also=joined)
            households[household_id] = merged.to_json()
            # No event behind it: the alert versions a merge produces carry no trace.
            await publish(household_id, merged, outcome, NO_TRACE)
        elif household is None:
            pass  # nothing kept for this household (already erased, purged or never seen)
        elif kind == "ERASE":
            del households[household_id]
        elif kind == "PURGE":
            # The state stays even when empty: its cutoffs keep a re-sent expired event out.
            removed = purge(household, command["cutoffs"])
            households[household_id] = household.to_json()
            metrics.EVENTS_PURGED.inc(removed)
        elif kind == "REKEY":
            # The alert ids stay: they were derived from the old pseudonym, the team knows them.
            new_id: str = command["new_household_id"]
            delivery = await commands.send(
                key=new_id.encode(),
                value=codec.encode(
                    PRIVACY_COMMAND_SCHEMA_NAME,
                    {
                        **command,
                        "kind": "MERGE",
                        "household_id": new_id,
                        "new_household_id": None,
                        "state_json": json.dumps(household.to_json()),
                    },
                ),
            )
            # Deleted only once MERGE is on the broker: a crash in between replays REKEY.
            await delivery
            del households[household_id]
        metrics.PRIVACY_COMMANDS.labels(kind).inc()
        log.info("privacy.command_applied", kind=kind, command_id=command["command_id"])

    @app.agent(sources, concurrency=1)
    async def correlate(stream: faust.StreamT[Any]) -> None:
        async for event in stream.events():
            try:
                await handle(event)
            except Exception:
                # A bug: stop the worker the graceful way (SIGTERM flushes the producer and
                # commits only what was processed) so this event is read again after the fix.
                log.exception(
                    "matcher.crashed",
                    correlation_id=read_trace(event.headers).correlation_id,
                    topic=event.message.topic,
                    partition=event.message.partition,
                    offset=event.message.offset,
                )
                os.kill(os.getpid(), signal.SIGTERM)
                raise

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "alive"})

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]
            if app.rebalancing or not recovered:
                return self.json(
                    {"status": "not ready", "problems": {"tables": "recovering or rebalancing"}},
                    status=503,
                )
            return self.json(
                {
                    "status": "ready",
                    "ruleset": {
                        "name": ruleset.name,
                        "version": ruleset.version,
                        "sha256": ruleset.digest,
                    },
                    "rules": ruleset.versions(),
                }
            )

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # aiohttp refuses a charset inside content_type, so the header is set directly.
            return self.bytes(
                generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

    return app
