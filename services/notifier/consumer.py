"""Consumes the alert topic and stores each alert in PostgreSQL, routed to its teams with its
notices queued, committing offsets only after.

At-least-once: a crash between the database commit and the offset commit replays a batch,
and the version-guarded upsert makes the replay harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import stamina
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import async_sessionmaker
from structlog.contextvars import bound_contextvars

from services.notifier import metrics
from services.notifier.delivery import Routing, active_teams, queue_notices, route_alert
from services.notifier.settings import NotifierSettings
from services.notifier.store import upsert_alert
from services.shared.avro import AvroCodec
from services.shared.correlation import Trace, read_trace
from services.shared.errors import DecodeError
from services.shared.events import ALERT_SCHEMA_NAME
from services.shared.logging import get_logger
from services.shared.topics import (
    DEADLETTER_HEADERS,
    alerts_topic,
    deadletter_headers,
    deadletter_topic,
)

log = get_logger("hub.notifier")

_TRANSIENT_DB = (OSError, OperationalError, InterfaceError)


@dataclass
class StoredBatch:
    """What one transaction of the alert consumer did, counted and logged by `count` only
    once it committed: a transaction retried or rolled back counts nothing."""

    #: Notices queued for channels.
    queued: int = 0
    #: Each alert version written, with the trace of its event.
    stored: list[tuple[dict[str, Any], Trace]] = field(default_factory=list)
    #: The rule of each alert message ignored as stale.
    stale: list[str] = field(default_factory=list)
    routings: list[Routing] = field(default_factory=list)
    #: Records that are no alert, with why: dead-lettered after the commit.
    undecodable: list[tuple[ConsumerRecord[bytes, bytes], str]] = field(default_factory=list)

    def count(self) -> None:
        for rule in self.stale:
            metrics.ALERTS_STALE.labels(rule).inc()
        for alert, trace in self.stored:
            metrics.ALERTS_STORED.labels(alert["rule_id"], alert["municipality_code"]).inc()
            seconds = trace.seconds_since_accepted()
            if seconds is not None:
                metrics.EVENT_TO_ALERT.labels(alert["rule_id"]).observe(seconds)
            with bound_contextvars(correlation_id=trace.correlation_id):
                log.info(
                    "alert.stored",
                    rule=alert["rule_id"],
                    version=alert["version"],
                    municipality=alert["municipality_code"],
                    seconds_since_accepted=seconds,
                )
        for routing in self.routings:
            routing.count()


class AlertConsumer:
    def __init__(
        self,
        settings: NotifierSettings,
        codec: AvroCodec,
        sessions: async_sessionmaker,  # type: ignore[type-arg]
        producer: AIOKafkaProducer,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._on_queued = on_queued
        self._codec = codec
        self._sessions = sessions
        self._producer = producer
        self._consumer = AIOKafkaConsumer(
            alerts_topic(settings),
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.notifier_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.started = asyncio.Event()

    async def run(self) -> None:
        await self._consumer.start()
        self.started.set()
        try:
            while True:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
                for partition, records in batches.items():
                    if await self._store(records):
                        self._on_queued()
                    await self._consumer.commit({partition: records[-1].offset + 1})
        finally:
            await self._consumer.stop()

    async def lag(self) -> dict[TopicPartition, int]:
        assigned = self._consumer.assignment()
        if not assigned:
            return {}
        ends = await self._consumer.end_offsets(list(assigned))
        return {tp: ends[tp] - await self._consumer.position(tp) for tp in assigned}

    async def _store(self, records: list[ConsumerRecord[bytes, bytes]]) -> int:
        """Stores a batch (see `_store_batch`); once committed, counts and logs what it did and
        dead-letters what could not be decoded. Returns how many notices were queued."""
        batch = await self._store_batch(records)
        batch.count()
        for record, detail in batch.undecodable:
            await self._dead_letter(record, detail)
        return batch.queued

    @stamina.retry(on=_TRANSIENT_DB, attempts=10, timeout=120)
    async def _store_batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> StoredBatch:
        """Stores, routes and queues the notices of a batch in one transaction; returns what
        it did, to be counted by the caller (a retry starts over with a new `StoredBatch`)."""
        batch = StoredBatch()
        async with self._sessions() as session, session.begin():
            teams = await active_teams(session)
            for record in records:
                try:
                    name, alert = self._codec.decode(record.value or b"")
                    if name != ALERT_SCHEMA_NAME:
                        raise DecodeError(f"{name} is not an alert")
                except DecodeError as exc:
                    batch.undecodable.append((record, str(exc)))
                    continue
                trace = read_trace(record.headers)
                notice = await upsert_alert(session, alert, trace)
                if notice is None:
                    batch.stale.append(alert["rule_id"])
                    continue
                batch.stored.append((alert, trace))
                routing = await route_alert(session, teams, alert, trace=trace)
                batch.routings.append(routing)
                version = [(alert["alert_id"], alert["version"])]
                if notice == "raised":
                    batch.queued += await queue_notices(session, version, "raised")
                else:
                    # A team that gets the alert only now hears of it as new, not as updated.
                    new_teams = routing.new_teams
                    batch.queued += await queue_notices(
                        session, version, "updated", except_teams=new_teams
                    )
                    batch.queued += await queue_notices(session, version, "raised", teams=new_teams)
        return batch

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], detail: str) -> None:
        metrics.DEADLETTERED.labels("undecodable").inc()
        log.warning(
            "alert.deadlettered",
            correlation_id=read_trace(record.headers).correlation_id,
            detail=detail,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
        await self._producer.send_and_wait(
            deadletter_topic(self._settings),
            record.value,
            key=record.key,
            # The record's own headers stay (its trace): a replay sends it on with them.
            headers=[(k, v) for k, v in record.headers if k not in DEADLETTER_HEADERS]
            + deadletter_headers(
                "undecodable", detail, record.topic, record.partition, record.offset
            ),
        )
