"""`hub status`: the operator's overview on one screen, read from Kafka and PostgreSQL.

Topics with their partitions and records, the lag of each consumer group per partition,
events per minute per event type (from the source topics' record timestamps), open and
overdue alerts per municipality, and delivery failures. No personal data: counts only.
Each part is read on its own; a part that cannot be read says why and the command exits 1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from rich.console import Console, Group
from rich.table import Table
from sqlalchemy import case, func, select
from sqlalchemy.exc import SQLAlchemyError

from services.shared.config import DatabaseSettings, HubSettings
from services.shared.db.engine import make_engine, make_sessionmaker
from services.shared.db.models import Alert, Delivery
from services.shared.errors import InfrastructureError
from services.shared.events import EventType
from services.shared.kafka import topic_partitions
from services.shared.lag import PartitionLag, consumer_lag, hub_consumer_groups
from services.shared.region import MUNICIPALITIES
from services.shared.topics import source_topic, topic_specs

#: Windows of the events-per-minute figures, in minutes.
WINDOWS = (1, 15)
#: How far back `hub status` counts failed deliveries.
FAILURES_SINCE = dt.timedelta(hours=24)


class StatusSettings(HubSettings, DatabaseSettings):
    """Kafka and the database, from the same HUB_* variables the services read."""


@dataclass
class Status:
    topics: list[dict[str, Any]] = field(default_factory=list)
    lag: list[dict[str, Any]] = field(default_factory=list)
    #: Group -> records it has not processed yet, over all its partitions.
    lag_per_group: dict[str, int] = field(default_factory=dict)
    #: Event type -> {"1m": events per minute over the last minute, "15m": ... 15 minutes}.
    events_per_minute: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Municipality code -> {"name", "open", "overdue"}.
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Channel -> {"failed_24h", "pending", "oldest_pending_s"}.
    deliveries: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Part -> why it could not be read.
    problems: dict[str, str] = field(default_factory=dict)


async def read_status(settings: StatusSettings) -> Status:
    status = Status()
    # An operator's overview: a part that cannot be reached says so, the rest is shown.
    try:
        await _read_kafka(settings, status)
    except (KafkaError, InfrastructureError, OSError, TimeoutError) as exc:
        status.problems["kafka"] = f"{type(exc).__name__}: {exc}"
    try:
        await _read_database(settings, status)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        status.problems["database"] = f"{type(exc).__name__}: {exc}"
    return status


async def _read_kafka(settings: StatusSettings, status: Status) -> None:
    names = [spec.name for spec in topic_specs(settings)]
    partitions = await asyncio.wait_for(topic_partitions(settings.kafka_bootstrap, names), 30)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        now_ms = int(time.time() * 1000)
        since = {
            minutes: await consumer.offsets_for_times(
                {tp: now_ms - minutes * 60_000 for tp in partitions}
            )
            for minutes in WINDOWS
        }
    finally:
        await consumer.stop()
    for name in names:
        mine = [tp for tp in partitions if tp.topic == name]
        status.topics.append(
            {
                "topic": name,
                "exists": bool(mine),
                "partitions": len(mine),
                "records": sum(ends[tp] - starts[tp] for tp in mine),
            }
        )
    for event_type in EventType:
        topic = source_topic(settings, event_type)
        rates = {}
        for minutes, found in since.items():
            # No record at or after the moment: nothing arrived in the window.
            recent = sum(
                ends[tp] - at.offset
                for tp, at in found.items()
                if tp.topic == topic and at is not None
            )
            rates[f"{minutes}m"] = round(recent / minutes, 2)
        status.events_per_minute[event_type.value] = rates
    lags = await asyncio.wait_for(
        consumer_lag(settings.kafka_bootstrap, hub_consumer_groups(settings)), 30
    )
    status.lag = [{**asdict(lag), "lag": lag.lag} for lag in lags]
    status.lag_per_group = _per_group(settings, lags)


def _per_group(settings: StatusSettings, lags: list[PartitionLag]) -> dict[str, int]:
    totals = dict.fromkeys(hub_consumer_groups(settings), 0)
    for lag in lags:
        totals[lag.group] += lag.lag
    return totals


async def _read_database(settings: StatusSettings, status: Status) -> None:
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine)() as session:
            now = dt.datetime.now(dt.UTC)
            alerts = await session.execute(
                select(
                    Alert.municipality_code,
                    func.count(),
                    func.count(case((Alert.overdue_at.is_not(None), 1))),
                )
                .where(Alert.status != "closed")
                .group_by(Alert.municipality_code)
            )
            counts = {code: (open_, overdue) for code, open_, overdue in alerts}
            for code, name in MUNICIPALITIES.items():
                open_, overdue = counts.pop(code, (0, 0))
                status.alerts[code] = {"name": name, "open": open_, "overdue": overdue}
            for code, (open_, overdue) in counts.items():  # outside Twente: should not be
                status.alerts[code] = {"name": "?", "open": open_, "overdue": overdue}
            deliveries = await session.execute(
                select(
                    Delivery.channel_kind,
                    func.count(
                        case(
                            (
                                (Delivery.status == "failed")
                                & (
                                    func.coalesce(Delivery.last_attempt_at, Delivery.created_at)
                                    >= now - FAILURES_SINCE
                                ),
                                1,
                            )
                        )
                    ),
                    func.count(case((Delivery.status == "pending", 1))),
                    func.min(case((Delivery.status == "pending", Delivery.created_at))),
                ).group_by(Delivery.channel_kind)
            )
            for channel, failed, pending, oldest in deliveries:
                status.deliveries[channel] = {
                    "failed_24h": failed,
                    "pending": pending,
                    "oldest_pending_s": (
                        round((now - oldest).total_seconds()) if oldest is not None else None
                    ),
                }
    finally:
        await engine.dispose()


def render(status: Status) -> Group:
    """The overview as rich tables, in the order an operator on call reads them."""
    parts: list[Any] = []
    for part, problem in status.problems.items():
        parts.append(f"[red]{part} unreachable: {problem}[/red]")
    if status.lag_per_group:
        groups = Table("consumer group", "lag", title="Consumer lag")
        for group, total in status.lag_per_group.items():
            groups.add_row(group, f"[red]{total}[/red]" if total else "0")
        parts.append(groups)
        partitions = Table("group", "topic", "partition", "committed", "end", "lag")
        for row in status.lag:
            if row["lag"]:
                partitions.add_row(
                    row["group"],
                    row["topic"],
                    str(row["partition"]),
                    "-" if row["committed"] is None else str(row["committed"]),
                    str(row["end"]),
                    str(row["lag"]),
                )
        if partitions.row_count:
            parts.append(partitions)
    if status.events_per_minute:
        rates = Table("event type", *(f"per min, last {m} min" for m in WINDOWS), title="Events in")
        for event_type, per in status.events_per_minute.items():
            rates.add_row(event_type, *(f"{per[f'{m}m']:g}" for m in WINDOWS))
        parts.append(rates)
    if status.topics:
        topics = Table("topic", "partitions", "records", title="Topics")
        for topic in status.topics:
            topics.add_row(
                topic["topic"],
                str(topic["partitions"]) if topic["exists"] else "[red]missing[/red]",
                str(topic["records"]),
            )
        parts.append(topics)
    if status.alerts:
        alerts = Table("municipality", "code", "open", "overdue", title="Alerts")
        for code, row in status.alerts.items():
            overdue = f"[red]{row['overdue']}[/red]" if row["overdue"] else "0"
            alerts.add_row(row["name"], code, str(row["open"]), overdue)
        parts.append(alerts)
    if status.deliveries or "database" not in status.problems:
        deliveries = Table(
            "channel", "failed (24 h)", "pending", "oldest pending", title="Deliveries"
        )
        for channel, row in sorted(status.deliveries.items()):
            oldest = row["oldest_pending_s"]
            deliveries.add_row(
                channel,
                f"[red]{row['failed_24h']}[/red]" if row["failed_24h"] else "0",
                str(row["pending"]),
                "" if oldest is None else f"{oldest} s",
            )
        parts.append(deliveries)
    return Group(*parts)


def show(status: Status, console: Console) -> None:
    console.print(render(status))
