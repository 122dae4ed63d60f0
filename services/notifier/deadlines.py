"""Deadlines: an open alert whose deadline has passed is escalated, once.

The deadline is a date (3 working days, 4 weeks, 14 days, as the rule says); it has passed
when the day after it has begun in Twente. Escalating marks the alert (`overdue_at`), counts
it per rule and municipality, and logs it, so an operator and a team lead can act; the team
API shows `overdue` and lists alerts by deadline, the overdue ones first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier import metrics
from services.notifier.delivery import queue_notices, route_unrouted, start_known_series
from services.shared.db.models import Alert
from services.shared.logging import get_logger
from services.shared.region import AMSTERDAM

log = get_logger("hub.notifier.deadlines")


def today() -> dt.date:
    return dt.datetime.now(AMSTERDAM).date()


async def escalate_overdue(sessions: async_sessionmaker[AsyncSession], day: dt.date) -> int:
    """Marks the open alerts whose deadline lies before `day` and queues the overdue notice
    for the channels that want it (the team lead's mailbox); returns how many were new."""
    async with sessions() as session, session.begin():
        # Rows the alert consumer holds are skipped (next round), so the two never deadlock.
        due = (
            select(Alert.alert_id)
            .where(Alert.status != "closed", Alert.deadline < day, Alert.overdue_at.is_(None))
            .order_by(Alert.alert_id)
            .with_for_update(skip_locked=True)
        )
        rows = (
            await session.execute(
                update(Alert)
                .where(Alert.alert_id.in_(due.scalar_subquery()))
                .values(overdue_at=dt.datetime.now(dt.UTC))
                .returning(Alert.alert_id, Alert.version, Alert.rule_id, Alert.municipality_code)
            )
        ).all()
        counts = Counter((rule, municipality) for _, _, rule, municipality in rows)
        await queue_notices(session, [(a, v) for a, v, _, _ in rows], "overdue")
    for (rule, municipality), count in sorted(counts.items()):
        metrics.ALERTS_OVERDUE.labels(rule, municipality).inc(count)
        log.warning("alerts.overdue", rule=rule, municipality=municipality, count=count)
    return sum(counts.values())


async def keep_escalating(
    sessions: async_sessionmaker[AsyncSession],
    every_s: float,
    on_queued: Callable[[], None] = lambda: None,
) -> None:
    """The notifier's routine: escalate what is overdue, route alerts that had no team."""
    while True:
        try:
            await escalate_overdue(sessions, today())
            async with sessions() as session, session.begin():
                routings = await route_unrouted(session)
                await start_known_series(session)
            for routing in routings:  # committed
                routing.count()
            on_queued()
        except Exception as exc:  # the database away: try again next round, loudly
            log.warning("alerts.overdue_check_failed", error=type(exc).__name__)
        await asyncio.sleep(every_s)
