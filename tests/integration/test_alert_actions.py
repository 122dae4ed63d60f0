"""A team member claims an alert and closes it with an outcome; the matcher hears of it."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from services.shared.avro import AvroCodec
from services.shared.kafka import topic_partitions
from services.shared.region import AMSTERDAM
from services.shared.topics import alert_outcomes_topic
from tests.integration.fixtures import (
    CARE_TEAM,
    DEBT_ONLY_TEAM,
    DEBT_TEAM,
    HENGELO_TEAM,
    Hub,
    debt_signal,
    new_address,
    service_metric,
    wait_for,
)
from tests.integration.test_privacy import (
    accepted,
    alert_with,
    household_of,
    multi_domain_household,
)
from tests.integration.test_rules_live import alerts_closed, wait_until_closed

pytestmark = pytest.mark.integration


def team_post(
    hub: Hub, path: str, token: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    return hub.client.post(
        f"{hub.stack.url('notifier')}{path}",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
    )


async def _outcomes(hub: Hub) -> list[dict[str, Any]]:
    settings = hub.stack.hub_settings
    codec = AvroCodec(settings.schemas_dir)
    partitions = await topic_partitions(hub.stack.kafka, [alert_outcomes_topic(settings)])
    consumer = AIOKafkaConsumer(bootstrap_servers=hub.stack.kafka, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                found.extend(codec.decode(m.value)[1] for m in messages)
        return found
    finally:
        await consumer.stop()


def wait_published(hub: Hub, alert_id: str) -> None:
    wait_for(
        lambda: (
            hub.query(
                "select published_at is not null from outcome_outbox where alert_id = :a",
                a=alert_id,
            )
            == [(True,)]
        ),
        "the notifier to publish the outcome",
    )


def test_claim_and_outcome_close_the_alert_and_reach_the_matcher(hub: Hub) -> None:
    address = new_address()
    accepted(hub.post("debt-signal", debt_signal(address, "2025-10-01"), "key-huur"))
    energy = dict(creditor_type="ENERGIE", creditor_name="Energie 01")
    second = accepted(
        hub.post("debt-signal", debt_signal(address, "2025-10-06", **energy), "key-energie")
    )
    alert_id = alert_with(hub, second, "twente-match", contributions=2)
    path = f"/v1/alerts/{alert_id}"

    # Another municipality's team cannot touch it.
    assert team_post(hub, f"{path}/claim", HENGELO_TEAM.token).status_code == 403

    claimed = team_post(hub, f"{path}/claim", DEBT_TEAM.token)
    assert claimed.status_code == 200
    assert claimed.json()["status"] == "claimed"
    assert claimed.json()["claimed_by"] == DEBT_TEAM.member_id
    assert team_post(hub, f"{path}/claim", DEBT_TEAM.token).status_code == 200  # again: harmless
    taken = team_post(hub, f"{path}/claim", DEBT_ONLY_TEAM.token)
    assert taken.status_code == 409 and "someone else" in taken.json()["detail"]

    wrong = team_post(hub, f"{path}/outcome", DEBT_TEAM.token, {"outcome": "opgelost"})
    assert wrong.status_code == 422
    assert "unknown outcome" in wrong.text and "hulp-gestart" in wrong.text

    closed_before = alerts_closed(hub)
    done = team_post(hub, f"{path}/outcome", DEBT_TEAM.token, {"outcome": "hulp-gestart"})
    assert done.status_code == 200
    assert done.json()["status"] == "closed" and done.json()["outcome"] == "hulp-gestart"
    again = team_post(hub, f"{path}/outcome", DEBT_TEAM.token, {"outcome": "niet-opgepakt"})
    assert again.status_code == 409

    # Every action is stored with who and when.
    actions = hub.query(
        "select action, team_id, member_id, outcome from alert_actions "
        "where alert_id = :a order by id",
        a=alert_id,
    )
    assert actions == [
        ("claim", DEBT_TEAM.team_id, DEBT_TEAM.member_id, None),
        ("outcome", DEBT_TEAM.team_id, DEBT_TEAM.member_id, "hulp-gestart"),
    ]

    # The outcome goes to Kafka in the background, for the matcher and the region's counts.
    wait_published(hub, alert_id)
    (record,) = [r for r in asyncio.run(_outcomes(hub)) if r["alert_id"] == alert_id]
    assert record["household_id"] == household_of(hub, alert_id)
    assert record["outcome"] == "hulp-gestart" and record["team_id"] == DEBT_TEAM.team_id
    assert record["closed_on"] == dt.datetime.now(AMSTERDAM).date()

    # And the matcher closed its episode: the rule's cool-down has begun.
    wait_until_closed(hub, closed_before)


def test_an_outcome_left_unpublished_is_sent_by_the_notifiers_loop(hub: Hub) -> None:
    """As after a crash between storing an outcome and publishing it."""
    address = new_address()
    crisis = accepted(
        hub.post(
            "debt-signal",
            debt_signal(address, "2025-11-03", crisis=True, crisis_kind="EVICTION"),
            "key-huur",
        )
    )
    alert_id = alert_with(hub, crisis, "debt-crisis")
    hub.execute(
        "insert into outcome_outbox (alert_id, outcome, closed_on, team_id, recorded_at) "
        "values (:a, 'niet-opgepakt', current_date, :t, now())",
        a=alert_id,
        t=DEBT_TEAM.team_id,
    )
    wait_published(hub, alert_id)
    (record,) = [r for r in asyncio.run(_outcomes(hub)) if r["alert_id"] == alert_id]
    assert record["outcome"] == "niet-opgepakt" and record["rule_id"] == "debt-crisis"


def overdue_count(hub: Hub, municipality: str) -> float:
    return service_metric(
        hub, "notifier", "hub_alerts_overdue_total", municipality=municipality, rule="debt-crisis"
    )


def test_an_open_alert_past_its_deadline_is_escalated(hub: Hub) -> None:
    # Hengelo: no other test raises its alerts there, so the count is this alert's alone.
    before = overdue_count(hub, "GM0164")
    crisis = accepted(
        hub.post(
            "debt-signal",
            debt_signal(
                new_address(),
                "2025-11-10",
                crisis=True,
                crisis_kind="EVICTION",
                municipality_code="GM0164",
                wijk_code=None,
            ),
            "key-huur",
        )
    )
    alert_id = alert_with(hub, crisis, "debt-crisis")  # due 13-11-2025: long past
    wait_for(
        lambda: hub.query("select overdue_at from alerts where alert_id = :a", a=alert_id)[0][0],
        "the notifier to find the deadline passed",
    )
    body = hub.team_get(f"/v1/alerts/{alert_id}", HENGELO_TEAM.token).json()
    assert body["overdue"] is True and body["deadline"] == "2025-11-13"
    # Counted once the mark committed: the count, not the row, is waited for.
    wait_for(lambda: overdue_count(hub, "GM0164") >= before + 1, "the overdue alert counted")
    assert overdue_count(hub, "GM0164") == before + 1
    # Closed, it is no longer overdue, and open alerts are listed before it.
    closed = team_post(
        hub, f"/v1/alerts/{alert_id}/outcome", HENGELO_TEAM.token, {"outcome": "geen-contact"}
    )
    assert closed.status_code == 200 and closed.json()["overdue"] is False
    listed = hub.team_get("/v1/alerts?municipality=GM0164&limit=500", HENGELO_TEAM.token).json()
    assert listed["total"] <= 500
    order = [(a["status"] == "closed", a["deadline"]) for a in listed["alerts"]]
    assert alert_id in {a["alert_id"] for a in listed["alerts"]}
    assert order == sorted(order)
    # Counted once: later checks find it closed and marked.
    assert overdue_count(hub, "GM0164") == before + 1


def test_a_note_is_kept_sealed_shown_to_the_team_with_who_and_when_and_its_reading_logged(
    hub: Hub,
) -> None:
    address = new_address()
    signal = accepted(hub.post("debt-signal", debt_signal(address, "2025-11-12"), "key-huur"))
    energy = dict(creditor_type="ENERGIE", creditor_name="Energie 01")
    second = accepted(
        hub.post("debt-signal", debt_signal(address, "2025-11-14", **energy), "key-energie")
    )
    assert signal != second
    alert_id = alert_with(hub, second, "twente-match", contributions=2)
    path = f"/v1/alerts/{alert_id}"
    text = "Huisbezoek gepland; mevrouw Kanarie-Notitie belt terug"

    assert team_post(hub, f"{path}/notes", HENGELO_TEAM.token, {"text": text}).status_code == 403
    for blank in ("", "   "):
        refused = team_post(hub, f"{path}/notes", DEBT_TEAM.token, {"text": blank})
        assert refused.status_code == 422
    made = team_post(hub, f"{path}/notes", DEBT_TEAM.token, {"text": text})
    assert made.status_code == 201 and made.json()["member_id"] == DEBT_TEAM.member_id

    (sealed,) = hub.query("select sealed from alert_notes where alert_id = :a", a=alert_id)[0]
    assert b"Kanarie" not in bytes(sealed)
    history = hub.team_get(f"{path}/history", DEBT_ONLY_TEAM.token).json()
    assert [(h["action"], h["member_id"], h["text"]) for h in history] == [
        ("note", DEBT_TEAM.member_id, text)
    ]
    assert hub.query(
        "select count(*) from access_log where alert_id = :a and action = 'view-notes' "
        "and member_id = :m",
        a=alert_id,
        m=DEBT_ONLY_TEAM.member_id,
    ) == [(1,)]
    assert hub.query("select action from alert_actions where alert_id = :a", a=alert_id) == [
        ("note",)
    ]


def test_a_care_workers_note_is_not_read_by_a_debt_team(hub: Hub) -> None:
    """Notes follow purpose binding: a note may speak of health (Wgs art. 8b)."""
    alert_id, _ = multi_domain_household(hub)
    path = f"/v1/alerts/{alert_id}"
    care_note = "GGZ-canary: crisisdienst was betrokken"
    debt_note = "Schuld-canary: betalingsregeling besproken"
    assert team_post(hub, f"{path}/notes", CARE_TEAM.token, {"text": care_note}).status_code == 201
    assert team_post(hub, f"{path}/notes", DEBT_TEAM.token, {"text": debt_note}).status_code == 201

    def texts(token: str) -> list[str]:
        return [h["text"] for h in hub.team_get(f"{path}/history", token).json()]

    assert texts(DEBT_TEAM.token) == [debt_note]
    assert texts(CARE_TEAM.token) == [care_note]  # the debt note holds debt details
    assert "GGZ-canary" not in hub.team_get(f"{path}/history", DEBT_TEAM.token).text
