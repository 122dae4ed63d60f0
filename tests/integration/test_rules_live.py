"""The live matcher runs the rules file: its versions, episodes closed by outcomes, future
events dead-lettered, and the explanation the team API gives."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.matcher.ruleset import DEFAULT_RULES_FILE, load_ruleset
from services.shared.avro import AvroCodec
from services.shared.correlation import CORRELATION_HEADER
from services.shared.events import ALERT_OUTCOME_SCHEMA_NAME, EventType
from services.shared.region import AMSTERDAM
from services.shared.topics import alert_outcomes_topic, deadletter_topic, source_topic
from tests.integration.fixtures import (
    DEBT_TEAM,
    Hub,
    debt_signal,
    new_address,
    service_metric,
    wait_for,
)
from tests.integration.test_privacy import accepted, alert_with, household_of

pytestmark = pytest.mark.integration


def matcher_metric(hub: Hub, name: str, **labels: str) -> float:
    return service_metric(hub, "matcher", name, **labels)


def alerts_closed(hub: Hub, outcome: str = "hulp-gestart") -> float:
    """How many twente-match alerts the matcher has closed with the outcome."""
    return matcher_metric(
        hub, "hub_matcher_alerts_closed_total", rule="twente-match", outcome=outcome
    )


def wait_until_closed(hub: Hub, before: float) -> None:
    wait_for(lambda: alerts_closed(hub) > before, "the matcher to close the alert")


def test_the_matcher_reports_the_rules_it_runs(hub: Hub) -> None:
    ruleset = load_ruleset(DEFAULT_RULES_FILE)
    ready = httpx.get(f"{hub.stack.url('matcher')}/readyz").json()
    assert ready["ruleset"] == {
        "name": ruleset.name,
        "version": ruleset.version,
        "sha256": ruleset.digest,
    }
    assert ready["rules"] == {"twente-match": 1, "debt-crisis": 1, "multi-domain": 1}
    for rule in ruleset.rules:
        labels = {
            "rule": rule.id,
            "version": str(rule.version),
            "ruleset": ruleset.name,
            "ruleset_version": ruleset.version,
        }
        assert matcher_metric(hub, "hub_matcher_rule_info", **labels) == 1.0


def close_alert(hub: Hub, alert_id: str, household_id: str, closed_on: dt.date) -> None:
    """What the notifier's inbox publishes when a team records an outcome."""
    codec = AvroCodec(hub.stack.hub_settings.schemas_dir)
    record = {
        "alert_id": alert_id,
        "household_id": household_id,
        "rule_id": "twente-match",
        "episode": 1,
        "municipality_code": "GM0153",
        "outcome": "hulp-gestart",
        "closed_on": closed_on,
        "recorded_at": dt.datetime.now(dt.UTC),
        "team_id": DEBT_TEAM.team_id,
    }

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=hub.stack.kafka)
        await producer.start()
        try:
            await producer.send_and_wait(
                alert_outcomes_topic(hub.stack.hub_settings),
                codec.encode(ALERT_OUTCOME_SCHEMA_NAME, record),
                key=household_id.encode(),
            )
        finally:
            await producer.stop()

    asyncio.run(send())


def test_a_closed_alert_stays_quiet_until_a_new_creditor_appears(hub: Hub) -> None:
    address = new_address()
    first = accepted(hub.post("debt-signal", debt_signal(address, "2025-09-01"), "key-huur"))
    energy = dict(creditor_type="ENERGIE", creditor_name="Energie 01")
    second = accepted(
        hub.post("debt-signal", debt_signal(address, "2025-09-08", **energy), "key-energie")
    )
    episode_1 = alert_with(hub, second, "twente-match", contributions=2)
    household = household_of(hub, episode_1)

    # The team API explains the alert for the worker.
    body = hub.team_get(f"/v1/alerts/{episode_1}", DEBT_TEAM.token).json()
    assert body["rule_title"] == "Twente-match"
    assert body["condition"] == (
        "ten minste 2 betalingsachterstanden bij ten minste 2 verschillende schuldeisers "
        "binnen 90 dagen"
    )
    assert body["explanation"].startswith("2 betalingsachterstanden bij 2 verschillende")

    closed_before = alerts_closed(hub)
    close_alert(hub, episode_1, household, dt.date(2025, 9, 15))
    wait_until_closed(hub, closed_before)

    # Within the cool-down the same creditors stay quiet. The crisis signal after the quiet
    # one raises its own alert, which shows the matcher has handled both.
    quiet = accepted(hub.post("debt-signal", debt_signal(address, "2025-09-20"), "key-huur"))
    crisis = accepted(
        hub.post(
            "debt-signal",
            debt_signal(address, "2025-09-22", crisis=True, crisis_kind="EVICTION"),
            "key-huur",
        )
    )
    alert_with(hub, crisis, "debt-crisis")
    twente = hub.query(
        "select alert_id, episode, version from alerts "
        "where household_id = :h and rule_id = 'twente-match'",
        h=household,
    )
    assert twente == [(episode_1, 1, 1)]
    assert not [
        a
        for a in hub.query("select alert_id from alert_contributions where event_id = :e", e=quiet)
        if a[0] != episode_1
    ]

    # A creditor the closed alert did not have: episode 2, a new alert, with the context.
    water = dict(creditor_type="WATER", creditor_name="Waterbedrijf 01")
    new = accepted(hub.post("debt-signal", debt_signal(address, "2025-09-25", **water), "key-zorg"))
    episode_2 = alert_with(hub, new, "twente-match", contributions=3)
    assert episode_2 != episode_1
    rows = hub.query("select episode, raised_on from alerts where alert_id = :a", a=episode_2)
    assert rows == [(2, dt.date(2025, 9, 25))]
    included = {
        r[0]
        for r in hub.query(
            "select event_id from alert_contributions where alert_id = :a", a=episode_2
        )
    }
    assert {first, second, quiet, new} <= included


async def _dead_letters(hub: Hub) -> list[tuple[dict[str, bytes], bytes]]:
    topic = deadletter_topic(hub.stack.hub_settings)
    partition = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=hub.stack.kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        found: list[tuple[dict[str, bytes], bytes]] = []
        while await consumer.position(partition) < end:
            for messages in (await consumer.getmany(partition, timeout_ms=1000)).values():
                found.extend((dict(m.headers), m.value) for m in messages)
        return found
    finally:
        await consumer.stop()


def test_an_event_from_the_future_is_refused_by_ingest_and_dead_lettered_by_the_matcher(
    hub: Hub,
) -> None:
    """Dead-lettered with its own headers too, so a replayed event keeps its trace."""
    in_a_month = (dt.datetime.now(AMSTERDAM) + dt.timedelta(days=30)).date()
    body = debt_signal(new_address(), in_a_month.isoformat(), crisis=True, crisis_kind="EVICTION")
    refused = hub.post("debt-signal", body, "key-huur")
    assert refused.status_code == 422
    assert refused.json() == {
        "errors": [
            {"field": "signal_date", "message": "lies 30 days after today; at most 1 allowed"}
        ]
    }

    def dead_letters_counted() -> float:
        return service_metric(
            hub, "matcher", "hub_matcher_events_deadlettered_total", reason="future-event"
        )

    counted_before = dead_letters_counted()
    # A record that reached the topic another way (a partner producing to Kafka directly).
    settings = hub.stack.hub_settings
    codec = AvroCodec(settings.schemas_dir)
    household = f"hh1-future-{uuid.uuid4().hex}"
    correlation_id = uuid.uuid4().hex
    record = {
        "event_id": str(uuid.uuid4()),
        "partner_id": "woningcorporatie-01",
        "partner_type": "HUUR",
        "partner_event_id": "p-future",
        "household_id": household,
        "pseudonym_version": 1,
        "person_id": None,
        "received_at": dt.datetime.now(dt.UTC),
        "municipality_code": "GM0153",
        "wijk_code": None,
        "creditor_type": "HUUR",
        "creditor_name": "Woningcorporatie 01",
        "amount_eur": 900,
        "arrear_start_date": dt.date(2025, 1, 1),
        "signal_date": in_a_month,
        "crisis": True,
        "crisis_kind": "EVICTION",
        "warm_handover": False,
    }

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=hub.stack.kafka)
        await producer.start()
        try:
            await producer.send_and_wait(
                source_topic(settings, EventType.DEBT_SIGNAL),
                codec.encode("nl.twente.hub.events.DebtSignal", record),
                key=household.encode(),
                headers=[(CORRELATION_HEADER, correlation_id.encode())],
            )
        finally:
            await producer.stop()

    asyncio.run(produce())

    def dead_lettered() -> dict[str, str] | None:
        for headers, value in asyncio.run(_dead_letters(hub)):
            if headers.get("hub-reason") != b"future-event":
                continue
            if codec.decode(value)[1]["event_id"] == record["event_id"]:
                return {k: v.decode() for k, v in headers.items()}
        return None

    headers = wait_for(dead_lettered, "the future event on the dead-letter topic")
    assert re.fullmatch(
        r"event date lies (30|31) days after the day it was received \(tolerance 1\)",
        headers["hub-detail"],
    )
    # The record's own headers stay: a replay keeps its correlation id.
    assert headers[CORRELATION_HEADER] == correlation_id
    # Not counted: a crisis signal would have raised an alert.
    assert hub.query("select count(*) from alerts where household_id = :h", h=household) == [(0,)]
    # The dead letter is counted: only this test dead-letters future events.
    wait_for(lambda: dead_letters_counted() > counted_before, "the dead letter counted")
    assert dead_letters_counted() == counted_before + 1
