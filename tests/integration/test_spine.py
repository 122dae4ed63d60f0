"""A partner event becomes a household alert in PostgreSQL, through real Kafka and Faust."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.fixtures import (
    Hub,
    alerts_of,
    base_event,
    debt_signal,
    new_address,
    service_metric,
    wait_for,
)

pytestmark = pytest.mark.integration


def contributions(hub: Hub, alert_id: str) -> list[str]:
    rows = hub.query(
        "select event_id from alert_contributions where alert_id = :a order by event_id",
        a=alert_id,
    )
    return [r[0] for r in rows]


def test_two_creditors_become_one_twente_match_alert(hub: Hub) -> None:
    address = new_address()
    first = hub.post("debt-signal", debt_signal(address, "2025-03-01"), "key-huur")
    second = hub.post(
        "debt-signal",
        debt_signal(address, "2025-04-15", creditor_type="ENERGIE", creditor_name="Energie 01"),
        "key-energie",
    )
    assert first.status_code == second.status_code == 202
    event_ids = {first.json()["event_id"], second.json()["event_id"]}

    rows = wait_for(lambda: alerts_of(hub, second.json()["event_id"]), "the twente-match alert")
    (alert_id, rule_id, _version, municipality, deadline) = rows[0]
    assert rule_id == "twente-match"
    assert municipality == "GM0153"
    assert str(deadline) == "2025-05-13"  # 4 weeks after the signal that made the match
    assert set(contributions(hub, alert_id)) == event_ids

    # The team API shows the same alert, explained, with no personal details.
    response = hub.team_get(f"/v1/alerts/{alert_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["rule_id"] == "twente-match"
    assert "schuldeisers" in body["explanation"]
    assert {c["event_id"] for c in body["contributions"]} == event_ids
    assert "Canary" not in response.text and "Teststraat" not in response.text
    listed = hub.team_get("/v1/alerts?rule=twente-match&municipality=GM0153&limit=500").json()
    assert alert_id in {a["alert_id"] for a in listed["alerts"]}


def test_a_creditor_joining_an_open_alert_updates_it_and_counts_an_escalation(hub: Hub) -> None:
    # Wierden: no other test raises alerts there, so the counts move for this test alone.
    place = {"municipality_code": "GM0189", "wijk_code": "WK018901"}

    def counted(name: str) -> float:
        return service_metric(hub, "matcher", name, municipality="GM0189", rule="twente-match")

    raised, escalated = counted("hub_alerts_raised_total"), counted("hub_alerts_escalated_total")
    address = new_address()
    signals = [
        ("key-huur", debt_signal(address, "2025-03-01", **place)),
        (
            "key-energie",
            debt_signal(
                address, "2025-03-10", creditor_type="ENERGIE", creditor_name="Energie 01", **place
            ),
        ),
        (
            "key-zorg",
            debt_signal(
                address,
                "2025-03-20",
                creditor_type="ZORG",
                creditor_name="Zorgverzekeraar",
                **place,
            ),
        ),
    ]
    event_ids = []
    for key, signal in signals[:2]:
        event_ids.append(hub.post("debt-signal", signal, key).json()["event_id"])
    (first,) = wait_for(lambda: alerts_of(hub, event_ids[1]), "the twente-match alert")
    event_ids.append(hub.post("debt-signal", signals[2][1], signals[2][0]).json()["event_id"])

    (joined,) = wait_for(lambda: alerts_of(hub, event_ids[2]), "the third creditor to join")
    # The same alert in a new version, not a second alert.
    assert (joined[0], joined[1], joined[2], joined[3]) == (first[0], "twente-match", 2, "GM0189")
    assert set(contributions(hub, first[0])) == set(event_ids)
    wait_for(lambda: counted("hub_alerts_escalated_total") > escalated, "the escalation counted")
    assert counted("hub_alerts_escalated_total") == escalated + 1
    assert counted("hub_alerts_raised_total") == raised + 1


def test_the_same_event_posted_twice_counts_once(hub: Hub) -> None:
    address = new_address()
    crisis = debt_signal(address, "2025-06-02", crisis=True, crisis_kind="EVICTION")
    first = hub.post("debt-signal", crisis, "key-huur")
    again = hub.post("debt-signal", crisis, "key-huur")
    assert first.status_code == again.status_code == 202
    assert first.json()["event_id"] == again.json()["event_id"]
    rows = wait_for(lambda: alerts_of(hub, first.json()["event_id"]), "the crisis alert")
    assert [r[1] for r in rows] == ["debt-crisis"]

    # A later event of the same household proves the matcher has moved past the re-send.
    care = hub.post(
        "care-indication",
        base_event(
            address, indication_date="2025-06-10", care_kind="WMO", message_type="WMO301_ALLOCATION"
        ),
        "key-wmo",
    )
    multi = wait_for(lambda: alerts_of(hub, care.json()["event_id"]), "the multi-domain alert")
    assert [r[1] for r in multi] == ["multi-domain"]
    assert len(contributions(hub, multi[0][0])) == 2
    crisis_alert = hub.query("select version from alerts where alert_id = :a", a=rows[0][0])
    assert crisis_alert == [(1,)]
    assert len(contributions(hub, rows[0][0])) == 1


def test_a_late_event_inside_the_window_still_triggers(hub: Hub) -> None:
    address = new_address()
    june = hub.post("debt-signal", debt_signal(address, "2025-06-20"), "key-huur")
    assert june.status_code == 202
    # Arrives after June's signal but happened in April: 70 days apart, inside 90.
    april = hub.post(
        "debt-signal",
        debt_signal(address, "2025-04-11", creditor_type="ZORG", creditor_name="Zorgverzekeraar"),
        "key-zorg",
    )
    rows = wait_for(lambda: alerts_of(hub, april.json()["event_id"]), "the late match")
    assert rows[0][1] == "twente-match"
    assert (
        str(hub.query("select raised_on from alerts where alert_id = :a", a=rows[0][0])[0][0])
        == "2025-06-20"
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"municipality_code": "GM0248"}, "municipality_code"),
        ({"amount_eur": 0}, "amount_eur"),
        ({"creditor_type": "CASINO"}, "creditor_type"),
        (
            {"address": {"street": "x", "house_number": 1, "postcode": "0000 AA", "city": "y"}},
            "address.postcode",
        ),
        (
            {
                "resident": {
                    "name": "Canary Testpersoon",
                    "birth_date": "1970-01-01",
                    "bsn": "123456789",
                }
            },
            "resident.bsn",
        ),
        ({"signal_date": "2025-13-01"}, "signal_date"),
    ],
)
def test_a_rejected_event_names_the_field_and_publishes_nothing(
    hub: Hub, change: dict[str, Any], field: str
) -> None:
    body = {**debt_signal(new_address(), "2025-02-02"), **change}
    before = hub.end_offsets()
    response = hub.post("debt-signal", body, "key-zorg")
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert field in {e["field"] for e in errors}
    assert all(e["message"] for e in errors)
    assert "Canary" not in response.text and "123456789" not in response.text
    assert hub.end_offsets() == before


def test_partner_may_only_publish_its_own_types_and_bsn_rights(hub: Hub) -> None:
    address = new_address()
    before = hub.end_offsets()
    wrong_type = hub.post(
        "wvggz-report",
        base_event(address, report_date="2025-02-02", reporter_category="FAMILY"),
        "key-huur",
    )
    assert wrong_type.status_code == 403
    with_bsn = debt_signal(address, "2025-02-02")
    with_bsn["resident"] = {**with_bsn["resident"], "bsn": "111222333"}
    assert hub.post("debt-signal", with_bsn, "key-huur").status_code == 422
    assert hub.post("debt-signal", with_bsn, "no-such-key").status_code == 401
    assert hub.end_offsets() == before
    assert hub.post("debt-signal", with_bsn, "key-zorg").status_code == 202
    # The control: an accepted event does move the offsets the rejections left alone.
    assert sum(hub.end_offsets().values()) == sum(before.values()) + 1


def test_every_service_reports_health_readiness_and_metrics(hub: Hub) -> None:
    # Every series below exists at 0 from start-up: what counts is that it moves.
    where = {"rule": "twente-match", "municipality": "GM0153"}
    wanted = [
        ("ingest", "hub_ingest_events_accepted_total", {"partner_type": "HUUR"}),
        ("ingest", "hub_ingest_events_rejected_total", {"reason": "invalid"}),
        ("matcher", "hub_matcher_events_processed_total", {"event_type": "debt-signal"}),
        ("matcher", "hub_alerts_raised_total", where),
        ("notifier", "hub_notifier_alerts_stored_total", where),
    ]
    http = {"channel": "http", "event_type": "debt-signal"}

    def samples() -> list[float]:
        return [
            service_metric(hub, service, name, **(labels if service != "ingest" else http | labels))
            for service, name, labels in wanted
        ]

    before = samples()
    address = new_address()
    hub.post("debt-signal", debt_signal(address, "2025-05-01"), "key-huur")
    hub.post(
        "debt-signal",
        debt_signal(address, "2025-05-02", creditor_name="Energie 01", creditor_type="ENERGIE"),
        "key-energie",
    )
    hub.post("debt-signal", debt_signal(address, "2025-05-03", amount_eur=-1), "key-huur")
    wait_for(
        lambda: all(a > b for a, b in zip(samples(), before, strict=True)),
        "every service to count the events and the stored alert",
    )
    for service in ("ingest", "matcher", "notifier"):
        base = hub.stack.url(service)
        assert hub.client.get(f"{base}/healthz").status_code == 200
        assert hub.client.get(f"{base}/readyz").status_code == 200
    ingest = hub.client.get(f"{hub.stack.url('ingest')}/metrics").text
    matcher = hub.client.get(f"{hub.stack.url('matcher')}/metrics").text
    notifier = hub.client.get(f"{hub.stack.url('notifier')}/metrics").text
    assert "hh1-" not in ingest + matcher + notifier
