"""The matcher's Faust app: one agent over the four source topics, a per-household table."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.matcher import metrics
from services.matcher.engine import Engine, Outcome, empty_state, merge, purge
from services.matcher.facts import Fact
from services.matcher.rules import BASELINE_RULES
from services.matcher.settings import MatcherSettings
from services.shared.avro import AvroCodec
from services.shared.errors import DecodeError
from services.shared.events import (
    ALERT_SCHEMA_NAME,
    BY_SCHEMA_NAME,
    PRIVACY_COMMAND_SCHEMA_NAME,
    EventType,
)
from services.shared.identity import alert_id
from services.shared.logging import get_logger
from services.shared.topics import (
    HOUSEHOLDS_TABLE,
    alerts_topic,
    deadletter_topic,
    privacy_commands_topic,
    source_topic,
)

log = get_logger("hub.matcher")


def create_app(settings: MatcherSettings) -> faust.App:
    codec = AvroCodec(settings.schemas_dir)
    engine = Engine(BASELINE_RULES)
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
    # Privacy commands share the agent with the events so each household's are in order.
    sources = app.topic(
        *(source_topic(settings, t) for t in EventType),
        privacy_commands_topic(settings),
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
        await deadletters.send(
            key=message.key,
            value=message.value,
            headers={
                "hub-reason": reason.encode(),
                "hub-detail": detail.encode(),
                "hub-source-topic": message.topic.encode(),
                "hub-source-partition": str(message.partition).encode(),
                "hub-source-offset": str(message.offset).encode(),
            },
        )

    async def handle(event: faust.EventT[Any]) -> None:
        try:
            schema_name, record = codec.decode(event.value)
        except DecodeError as exc:
            await dead_letter(event, "undecodable", str(exc))
            return
        if schema_name not in BY_SCHEMA_NAME and schema_name != PRIVACY_COMMAND_SCHEMA_NAME:
            await dead_letter(event, "not-a-source-event", schema_name)
            return
        household_id: str = record["household_id"]
        if event.key != household_id.encode():
            await dead_letter(event, "key-mismatch", "record key is not the household_id")
            return
        if schema_name == PRIVACY_COMMAND_SCHEMA_NAME:
            await obey(household_id, record)
            return
        fact = Fact.from_event(schema_name, record)
        state = households.get(household_id) or empty_state()
        outcome = engine.apply(household_id, state, fact)
        if outcome.expired:
            metrics.EVENTS_EXPIRED.labels(fact.event_type).inc()
        elif outcome.duplicate:
            metrics.EVENTS_DUPLICATE.labels(fact.event_type).inc()
        else:
            households[household_id] = state
            metrics.EVENTS_PROCESSED.labels(fact.event_type).inc()
        await publish(household_id, outcome)

    async def publish(household_id: str, outcome: Outcome) -> None:
        for rule_id in outcome.raised:
            metrics.ALERTS_RAISED.labels(rule_id).inc()
        for rule_id in outcome.escalated:
            metrics.ALERTS_ESCALATED.labels(rule_id).inc()
        for alert in outcome.alerts:
            await alerts.send(
                key=household_id.encode(), value=codec.encode(ALERT_SCHEMA_NAME, alert)
            )

    async def obey(household_id: str, command: dict[str, Any]) -> None:
        """Erase, purge or move one household's state; deleting a key writes a tombstone."""
        kind: str = command["kind"]
        state = households.get(household_id)
        if kind == "MERGE":
            merged = state or empty_state()
            joined = merge(merged, json.loads(command["state_json"]))
            # Events that arrived under the new pseudonym first now meet the moved ones.
            outcome = engine.evaluate(household_id, merged, also=joined)
            households[household_id] = merged
            await publish(household_id, outcome)
        elif state is None:
            pass  # nothing kept for this household (already erased, purged or never seen)
        elif kind == "ERASE":
            del households[household_id]
        elif kind == "PURGE":
            # The state stays even when empty: its cutoffs keep a re-sent expired event out.
            removed = purge(state, command["cutoffs"])
            households[household_id] = state
            metrics.EVENTS_PURGED.inc(removed)
        elif kind == "REKEY":
            new_id: str = command["new_household_id"]
            for rule_id, alert in state["alerts"].items():
                # Keep the id the team knows: it was derived from the old pseudonym.
                alert.setdefault("alert_id", alert_id(household_id, rule_id, alert["episode"]))
            delivery = await commands.send(
                key=new_id.encode(),
                value=codec.encode(
                    PRIVACY_COMMAND_SCHEMA_NAME,
                    {
                        **command,
                        "kind": "MERGE",
                        "household_id": new_id,
                        "new_household_id": None,
                        "state_json": json.dumps(state),
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
            return self.json({"status": "ready", "rules": {r.id: r.version for r in engine.rules}})

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # aiohttp refuses a charset inside content_type, so the header is set directly.
            return self.bytes(
                generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
            )

    return app
