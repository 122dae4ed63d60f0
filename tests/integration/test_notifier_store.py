"""The notifier's alert consumer in-process against a database of its own: what a stored
batch counts when its transaction is retried, and what a dead letter keeps."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from structlog.testing import capture_logs

from services.cli.stack import create_database
from services.matcher.engine import Engine, Household
from services.matcher.facts import Fact
from services.matcher.ruleset import DEFAULT_RULES_FILE, load_ruleset
from services.notifier import metrics
from services.notifier.consumer import AlertConsumer
from services.notifier.delivery import start_known_series
from services.notifier.settings import NotifierSettings
from services.shared.avro import AvroCodec
from services.shared.config import DatabaseSettings
from services.shared.correlation import ACCEPTED_AT_HEADER, CORRELATION_HEADER
from services.shared.db.migrate import upgrade
from services.shared.db.models import Delivery, Team, TeamChannel
from services.shared.events import ALERT_SCHEMA_NAME
from services.shared.topics import deadletter_topic

pytestmark = pytest.mark.integration

RULE = "twente-match"
MUNICIPALITY = "GM0153"
#: Teams of the municipality the alerts are routed to: each has the alert in its inbox.
TEAMS = ("schuldhulp-store-1", "schuldhulp-store-2")


@pytest.fixture(scope="module")
def store_database(database_url: str) -> Iterator[str]:
    url = asyncio.run(create_database(database_url, f"store{uuid.uuid4().hex[:8]}"))
    upgrade(DatabaseSettings(database_url=url))

    async def add_teams() -> None:
        engine = create_async_engine(url)
        try:
            async with async_sessionmaker(engine)() as session, session.begin():
                session.add_all(
                    Team(
                        team_id=team_id,
                        name=team_id,
                        purposes=["debt-help"],
                        municipalities=[MUNICIPALITY],
                    )
                    for team_id in TEAMS
                )
                await session.flush()
                # Never sent: nothing dispatches in these tests.
                session.add(
                    TeamChannel(
                        team_id=TEAMS[0],
                        kind="webhook",
                        target="https://team.invalid/hook",
                        notices=["raised", "updated"],
                    )
                )
        finally:
            await engine.dispose()

    asyncio.run(add_teams())
    yield url


@pytest.fixture
async def sessions(store_database: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(store_database)
    try:
        yield async_sessionmaker(engine, expire_on_commit=False)
    finally:
        await engine.dispose()


class FirstCommitFails:
    """Sessions whose first transaction fails at its commit, as when the database goes away
    just then: the consumer's retry runs the whole transaction again."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self.failed = 0

    def __call__(self) -> AsyncSession:
        session = self._sessions()
        if not self.failed:
            self.failed += 1

            def fail(_: Any) -> None:
                raise OperationalError("COMMIT", None, ConnectionResetError("database gone"))

            event.listen(session.sync_session, "before_commit", fail)
        return session


class SentRecords:
    """A producer that keeps what it is asked to send."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(self, topic: str, value: bytes | None, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, "value": value, **kwargs})


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def counts() -> dict[str, float]:
    """The notifier's series one stored alert version moves."""
    return {
        "stored": sample("hub_notifier_alerts_stored_total", rule=RULE, municipality=MUNICIPALITY),
        "stale": sample("hub_notifier_alerts_stale_total", rule=RULE),
        "to_alert": sample("hub_event_to_alert_seconds_count", rule=RULE),
        "to_inbox": sample("hub_event_to_delivery_seconds_count", channel="inbox"),
        "inbox": sample("hub_notifier_deliveries_total", channel="inbox", status="delivered"),
        "routed": sample("hub_notifier_alerts_routed_total", via="municipality"),
    }


def moved(before: dict[str, float]) -> dict[str, float]:
    after = counts()
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def alert_versions() -> list[dict[str, Any]]:
    """Versions 1 and 2 of a twente-match alert of a new household, as the matcher makes them."""
    engine = Engine(load_ruleset(DEFAULT_RULES_FILE).rules)
    household_id, household = f"hh1-store-{uuid.uuid4().hex}", Household()
    versions = []
    for day, creditor in [
        ("2025-03-01", "huur"),
        ("2025-03-02", "energie"),
        ("2025-03-03", "water"),
    ]:
        fact = Fact(
            event_id=str(uuid.uuid4()),
            event_type="debt-signal",
            domain="debt",
            partner_id=f"p-{creditor}",
            partner_type="HUUR",
            event_date=dt.date.fromisoformat(day),
            municipality_code=MUNICIPALITY,
            wijk_code=None,
            creditor_type="HUUR",
            creditor=creditor,
            amount_eur=500,
        )
        outcome = engine.apply(household_id, household, fact)
        versions.extend(engine.records(household_id, household, outcome.publish))
    assert [(a["rule_id"], a["version"]) for a in versions] == [(RULE, 1), (RULE, 2)]
    return versions


def record(value: bytes, headers: list[tuple[str, bytes]], offset: int = 0) -> ConsumerRecord:  # type: ignore[type-arg]
    return ConsumerRecord(
        topic="hub.alerts.v1",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"household",
        value=value,
        checksum=None,
        serialized_key_size=9,
        serialized_value_size=len(value),
        headers=headers,
    )


def traced(correlation_id: str) -> list[tuple[str, bytes]]:
    accepted_at = dt.datetime.now(dt.UTC).timestamp() - 1
    return [
        (CORRELATION_HEADER, correlation_id.encode()),
        (ACCEPTED_AT_HEADER, f"{accepted_at:.6f}".encode()),
    ]


def consumer(sessions: Any, producer: SentRecords | None = None) -> AlertConsumer:
    """The notifier's alert consumer, not subscribed: the tests hand it batches."""
    settings = NotifierSettings()
    return AlertConsumer(
        settings,
        AvroCodec(settings.schemas_dir),
        sessions,
        cast(AIOKafkaProducer, producer or SentRecords()),
    )


async def test_a_batch_whose_first_commit_fails_counts_each_version_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    codec = AvroCodec(NotifierSettings().schemas_dir)
    raised, updated = (codec.encode(ALERT_SCHEMA_NAME, a) for a in alert_versions())

    async def store(value: bytes, correlation_id: str) -> dict[str, float]:
        """Stores one alert record through a first commit that fails; what moved."""
        failing = FirstCommitFails(sessions)
        alerts = consumer(failing)
        before = counts()
        try:
            await alerts._store([record(value, traced(correlation_id))])
        finally:
            await alerts._consumer.stop()
        assert failing.failed == 1
        return moved(before)

    teams = len(TEAMS)
    assert await store(raised, uuid.uuid4().hex) == {
        "stored": 1,
        "to_alert": 1,
        "to_inbox": teams,
        "inbox": teams,
        "routed": teams,
    }
    # An updated version is in each team's inbox too: timed, no new route.
    assert await store(updated, uuid.uuid4().hex) == {"stored": 1, "to_alert": 1, "to_inbox": teams}
    assert await store(raised, uuid.uuid4().hex) == {"stale": 1}


async def test_an_undecodable_alert_is_dead_lettered_with_its_own_headers(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """`hub deadletter replay` sends the record on with its own headers: its trace stays."""
    producer = SentRecords()
    alerts = consumer(sessions, producer)
    correlation_id = uuid.uuid4().hex
    own = [*traced(correlation_id), ("hub-partner", b"woningcorporatie-01")]

    def counted() -> float | None:
        name, labels = "hub_notifier_alerts_deadlettered_total", {"reason": "undecodable"}
        return metrics.REGISTRY.get_sample_value(name, labels)

    before = counted() or 0.0
    try:
        with capture_logs() as logs:
            await alerts._store([record(b"\x00not avro", own, offset=7)])
    finally:
        await alerts._consumer.stop()
    assert counted() == before + 1
    (logged,) = (line for line in logs if line["event"] == "alert.deadlettered")
    assert logged["correlation_id"] == correlation_id
    (sent,) = producer.sent
    assert sent["topic"] == deadletter_topic(alerts._settings)
    assert sent["value"] == b"\x00not avro"
    headers = dict(sent["headers"])
    assert {k: headers[k] for k, _ in own} == dict(own)
    assert headers["hub-reason"] == b"undecodable"
    assert headers["hub-source-offset"] == b"7"


async def test_each_notice_keeps_the_correlation_id_of_its_own_version(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A notice of version 1 sent after version 2 arrived is logged under version 1's event."""
    codec = AvroCodec(NotifierSettings().schemas_dir)
    first, second = alert_versions()
    ids = {1: uuid.uuid4().hex, 2: uuid.uuid4().hex}
    alerts = consumer(sessions)
    try:
        for offset, alert in enumerate((first, second)):
            value = codec.encode(ALERT_SCHEMA_NAME, alert)
            await alerts._store([record(value, traced(ids[alert["version"]]), offset)])
    finally:
        await alerts._consumer.stop()
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Delivery.alert_version, Delivery.notice, Delivery.correlation_id)
                .where(Delivery.alert_id == first["alert_id"])
                .order_by(Delivery.alert_version)
            )
        ).all()
    assert [tuple(r) for r in rows] == [(1, "raised", ids[1]), (2, "updated", ids[2])]


async def test_the_sweep_starts_the_series_of_each_rule_and_municipality_stored(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """As after a restart: the series of alerts stored before exist at 0 once the sweep ran,
    so the first increase after it is one Prometheus sees."""
    codec = AvroCodec(NotifierSettings().schemas_dir)
    alerts = consumer(sessions)
    try:
        await alerts._store([record(codec.encode(ALERT_SCHEMA_NAME, alert_versions()[0]), [])])
    finally:
        await alerts._consumer.stop()
    where = {"rule": RULE, "municipality": MUNICIPALITY}
    series = [
        (metrics.ALERTS_STORED, "hub_notifier_alerts_stored_total", where),
        (metrics.ALERTS_OVERDUE, "hub_alerts_overdue_total", where),
        (metrics.ALERTS_STALE, "hub_notifier_alerts_stale_total", {"rule": RULE}),
        (metrics.EVENT_TO_ALERT, "hub_event_to_alert_seconds_count", {"rule": RULE}),
    ]
    for metric, _, labels in series:
        with contextlib.suppress(KeyError):  # not there yet
            metric.remove(*labels.values())
    async with sessions() as session:
        await start_known_series(session)
    for _, name, labels in series:
        assert metrics.REGISTRY.get_sample_value(name, labels) == 0, name
