"""A team's work on an alert: claiming it, closing it with an outcome, and telling the matcher.

An outcome is stored with the alert and, in the same transaction, in the outbox. The outbox
is then published as `AlertOutcome` records on `<prefix>.alert-outcomes.v1`, right away and
again by a loop for whatever a failure left behind: the matcher starts the rule's cool-down
from it, the region counts households approached and helped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier import metrics
from services.shared.avro import AvroCodec
from services.shared.config import HubSettings
from services.shared.db.models import Alert, AlertAction, OutcomeOutbox
from services.shared.events import ALERT_OUTCOME_SCHEMA_NAME
from services.shared.logging import get_logger
from services.shared.region import AMSTERDAM
from services.shared.topics import alert_outcomes_topic

log = get_logger("hub.notifier.outcomes")

#: How often the loop looks for outcomes a failure left unpublished.
RETRY_INTERVAL_S = 10.0


class Conflict(Exception):
    """The action does not fit the alert's state; the message says why, for the member."""


def claim(session: AsyncSession, alert: Alert, team_id: str, member_id: str) -> bool:
    """Takes the alert on for `member_id`; False when they already had it (nothing changes)."""
    if alert.status == "closed":
        raise Conflict("this alert is closed")
    if alert.claimed_by == member_id:
        return False
    if alert.claimed_by is not None:
        raise Conflict("someone else has claimed this alert")
    alert.status, alert.claimed_by = "claimed", member_id
    alert.claimed_at = dt.datetime.now(dt.UTC)
    session.add(
        AlertAction(alert_id=alert.alert_id, team_id=team_id, member_id=member_id, action="claim")
    )
    return True


def close(session: AsyncSession, alert: Alert, team_id: str, member_id: str, outcome: str) -> None:
    """Closes the alert with an outcome and queues the outcome for the matcher."""
    if alert.status == "closed":
        raise Conflict(f"this alert was closed already, with outcome {alert.outcome}")
    if alert.claimed_by not in (None, member_id):
        raise Conflict("someone else has claimed this alert; they record its outcome")
    now = dt.datetime.now(dt.UTC)
    alert.status, alert.outcome, alert.closed_at = "closed", outcome, now
    if alert.claimed_by is None:
        alert.claimed_by, alert.claimed_at = member_id, now
    session.add(
        AlertAction(
            alert_id=alert.alert_id,
            team_id=team_id,
            member_id=member_id,
            action="outcome",
            outcome=outcome,
        )
    )
    session.add(
        OutcomeOutbox(
            alert_id=alert.alert_id,
            outcome=outcome,
            closed_on=now.astimezone(AMSTERDAM).date(),
            team_id=team_id,
            recorded_at=now,
        )
    )


def _record(entry: OutcomeOutbox) -> dict[str, Any]:
    alert = entry.alert
    return {
        "alert_id": alert.alert_id,
        "household_id": alert.household_id,
        "rule_id": alert.rule_id,
        "episode": alert.episode,
        "municipality_code": alert.municipality_code,
        "outcome": entry.outcome,
        "closed_on": entry.closed_on,
        "recorded_at": entry.recorded_at,
        "team_id": entry.team_id,
    }


async def publish_pending(
    sessions: async_sessionmaker[AsyncSession],
    producer: AIOKafkaProducer,
    codec: AvroCodec,
    settings: HubSettings,
) -> int:
    """Publishes the outbox's unpublished outcomes, one transaction each; returns how many.

    A row is locked while it is sent (SKIP LOCKED: two notifier replicas never send one
    twice, and never wait for each other), and marked published in the same short
    transaction once Kafka has acknowledged it. A failure leaves that row for the next round
    and does not undo what was sent before it.
    """
    sent = 0
    while True:
        async with sessions() as session, session.begin():
            entry = await session.scalar(
                select(OutcomeOutbox)
                .where(OutcomeOutbox.published_at.is_(None))
                .order_by(OutcomeOutbox.recorded_at)
                .limit(1)
                .with_for_update(skip_locked=True, of=OutcomeOutbox)
            )
            if entry is None:
                return sent
            record = _record(entry)
            await producer.send_and_wait(
                alert_outcomes_topic(settings),
                codec.encode(ALERT_OUTCOME_SCHEMA_NAME, record),
                key=record["household_id"].encode(),
            )
            entry.published_at = dt.datetime.now(dt.UTC)
        metrics.OUTCOMES_PUBLISHED.labels(record["outcome"]).inc()
        sent += 1


class OutcomePublisher:
    """Publishes the outbox in the background: woken when an outcome is stored, and every
    `RETRY_INTERVAL_S` for whatever a failure (Kafka away, a crash) left behind. A member
    recording an outcome never waits for Kafka."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: AIOKafkaProducer,
        codec: AvroCodec,
        settings: HubSettings,
    ) -> None:
        self._args = (sessions, producer, codec, settings)
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await publish_pending(*self._args)
            except Exception as exc:  # lost infrastructure: try again later, loudly
                log.warning("outcomes.publish_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RETRY_INTERVAL_S)
            self._wake.clear()
