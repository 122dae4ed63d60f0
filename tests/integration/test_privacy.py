"""Privacy through the running hub: purpose binding, encrypted contacts, access log, erasure,
retention purge, and the audit scan over topics, tables, logs and metrics."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.shared.config import DatabaseSettings, VaultSettings
from services.shared.crypto import Vault
from services.shared.db.contacts import open_contacts
from services.shared.db.engine import make_engine, make_sessionmaker
from services.shared.errors import DecryptionFailed
from services.shared.topics import changelog_topic, deadletter_topic
from tests.integration.fixtures import (
    CARE_TEAM,
    DEBT_ONLY_TEAM,
    DEBT_TEAM,
    HENGELO_TEAM,
    Hub,
    alerts_of,
    base_event,
    debt_signal,
    new_address,
    wait_for,
)

pytestmark = pytest.mark.integration
SCAN_S = 900

BACKUP_COLUMNS = ("event_id", "household_id", "key_id", "event_type", "domain", "event_date")
RESTORE = text(
    "insert into contact_details (event_id, household_id, key_id, event_type, domain, "
    "event_date, sealed) values (:event_id, :household_id, :key_id, :event_type, :domain, "
    ":event_date, :sealed)"
)


def resident(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "birth_date": "1961-04-12", "phone": "+31 6 1234 5678", **extra}


def accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    event_id: str = response.json()["event_id"]
    return event_id


def alert_with(hub: Hub, event_id: str, rule: str, contributions: int = 1) -> str:
    """Waits for the alert of `rule` holding `event_id` with at least so many contributions."""

    def probe() -> str | None:
        for alert_id, rule_id, *_ in alerts_of(hub, event_id):
            count = hub.query(
                "select count(*) from alert_contributions where alert_id = :a", a=alert_id
            )[0][0]
            if rule_id == rule and count >= contributions:
                return str(alert_id)
        return None

    return wait_for(probe, f"the {rule} alert")


def household_of(hub: Hub, alert_id: str) -> str:
    return str(hub.query("select household_id from alerts where alert_id = :a", a=alert_id)[0][0])


def matcher_counter(hub: Hub, kind: str) -> float:
    text = httpx.get(f"{hub.stack.url('matcher')}/metrics").text
    match = re.search(rf'^hub_matcher_privacy_commands_total{{kind="{kind}"}} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


def erase_by_address(hub: Hub, address: dict[str, Any], reference: str) -> dict[str, Any]:
    """`hub privacy erase` as the privacy officer runs it for a resident's request."""
    result = hub.cli(
        "privacy",
        "erase",
        "--postcode",
        address["postcode"],
        "--house-number",
        str(address["house_number"]),
        "--reference",
        reference,
        "--json",
    )
    assert result.returncode == 0
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def assert_only_a_crisis_alert(hub: Hub, address: dict[str, Any], day: str, **extra: Any) -> None:
    """A crisis signal from a third creditor: if the household's earlier signals still
    counted it would also make a Twente-match; the crisis alert is the sign it was processed."""
    third = debt_signal(
        address,
        day,
        creditor_type="ZORG",
        creditor_name="Zorgverzekeraar 01",
        crisis=True,
        crisis_kind="HEALTH_INSURANCE_END",
        **extra,
    )
    third_id = accepted(hub.post("debt-signal", third, "key-zorg"))
    alert_with(hub, third_id, "debt-crisis")
    assert [r[1] for r in alerts_of(hub, third_id)] == ["debt-crisis"]


def multi_domain_household(hub: Hub) -> tuple[str, dict[str, str]]:
    """Debt, Wvggz and district nursing for one household, each with its own resident name."""
    address = new_address()
    debt = debt_signal(address, "2025-07-01")
    debt["resident"] = resident("Debtcanary Jansen")
    wvggz = base_event(address, report_date="2025-07-03", reporter_category="NEIGHBOUR")
    wvggz["resident"] = resident("Wvggzcanary Pietersen")
    nursing = base_event(
        address,
        indication_date="2025-07-05",
        care_kind="WIJKVERPLEGING",
        message_type="ZVW_INDICATION",
    )
    nursing["resident"] = resident("Zorgcanary Bakker")
    events = {
        "debt": accepted(hub.post("debt-signal", debt, "key-huur")),
        "wvggz": accepted(hub.post("wvggz-report", wvggz, "key-ggd")),
        "care": accepted(hub.post("care-indication", nursing, "key-wmo")),
    }
    return alert_with(hub, events["care"], "multi-domain", contributions=3), events


def test_each_team_sees_only_the_domains_its_purposes_disclose(hub: Hub) -> None:
    alert_id, events = multi_domain_household(hub)

    debt_view = hub.team_get(f"/v1/alerts/{alert_id}", DEBT_TEAM.token)
    assert debt_view.status_code == 200
    body = debt_view.json()
    assert [c["event_id"] for c in body["contributions"]] == [events["debt"]]
    assert body["domains"] == ["debt"]
    assert body["other_domains_involved"] == 2
    for health_word in ("wvggz", "care", "GGD", "WIJKVERPLEGING", "zorg en ondersteuning"):
        assert health_word not in debt_view.text
    debt_contact = hub.team_get(f"/v1/alerts/{alert_id}/contact", DEBT_TEAM.token)
    assert debt_contact.status_code == 200
    assert [c["name"] for c in debt_contact.json()["contacts"]] == ["Debtcanary Jansen"]
    assert "Wvggzcanary" not in debt_contact.text and "Zorgcanary" not in debt_contact.text

    care_view = hub.team_get(f"/v1/alerts/{alert_id}", CARE_TEAM.token).json()
    assert {c["domain"] for c in care_view["contributions"]} == {"wvggz", "care"}
    assert care_view["other_domains_involved"] == 1
    care_contact = hub.team_get(f"/v1/alerts/{alert_id}/contact", CARE_TEAM.token)
    assert {c["name"] for c in care_contact.json()["contacts"]} == {
        "Wvggzcanary Pietersen",
        "Zorgcanary Bakker",
    }
    assert "Debtcanary" not in care_contact.text

    # The regional team holds every purpose and sees every domain.
    full = hub.team_get(f"/v1/alerts/{alert_id}/contact").json()
    assert len(full["contacts"]) == 3
    assert full["contacts"][0]["street"] == "Teststraat"

    # A team without the rule's purpose, or of another municipality, gets nothing.
    for team in (DEBT_ONLY_TEAM, HENGELO_TEAM):
        assert hub.team_get(f"/v1/alerts/{alert_id}", team.token).status_code == 403
        assert hub.team_get(f"/v1/alerts/{alert_id}/contact", team.token).status_code == 403
    listed = hub.team_get("/v1/alerts?rule=multi-domain&limit=500", DEBT_ONLY_TEAM.token).json()
    assert alert_id not in {a["alert_id"] for a in listed["alerts"]}
    listed = hub.team_get("/v1/alerts?rule=multi-domain&limit=500", DEBT_TEAM.token).json()
    (mine,) = [a for a in listed["alerts"] if a["alert_id"] == alert_id]
    assert {c["domain"] for c in mine["contributions"]} == {"debt"}

    # Stored encrypted: the database holds no name in clear.
    sealed = hub.query("select sealed from contact_details where event_id = :e", e=events["debt"])
    assert b"Debtcanary" not in bytes(sealed[0][0])

    # Every view of personal details is in the access log, with who, purpose and domains.
    result = hub.cli("privacy", "access-log", "--alert", alert_id, "--json")
    assert result.returncode == 0
    contact_views = {
        (e["team_id"], tuple(e["domains"]))
        for e in json.loads(result.stdout)
        if e["action"] == "view-contact"
    }
    assert contact_views == {
        (DEBT_TEAM.team_id, ("debt",)),
        (CARE_TEAM.team_id, ("care", "wvggz")),
        ("regio-twente", ("care", "debt", "wvggz")),
    }
    household = household_of(hub, alert_id)
    by_household = json.loads(
        hub.cli("privacy", "access-log", "--household", household, "--json").stdout
    )
    assert {e["alert_id"] for e in by_household} == {alert_id}
    assert all(e["purpose"] == "integrated-approach" for e in by_household)
    with pytest.raises(DBAPIError, match="append-only"):
        hub.execute("delete from access_log where alert_id = :a", a=alert_id)
    with pytest.raises(DBAPIError, match="append-only"):
        hub.execute(
            "update access_log set member_id = 'someone-else' where alert_id = :a", a=alert_id
        )


def test_the_wvggz_reporter_stays_anonymous(hub: Hub) -> None:
    before = hub.end_offsets()
    body = base_event(new_address(), report_date="2025-07-03", reporter_category="NEIGHBOUR")
    body["reporter"] = {"name": "Reportercanary Smit", "phone": "0612345678"}
    response = hub.post("wvggz-report", body, "key-ggd")
    assert response.status_code == 422
    assert "reporter" in {e["field"] for e in response.json()["errors"]}
    assert "Reportercanary" not in response.text
    assert hub.end_offsets() == before


def read_changelog(hub: Hub, key: bytes) -> list[bytes | None]:
    """The values the matcher's table changelog holds for `key`, oldest first."""

    async def read() -> list[bytes | None]:
        settings = hub.stack.hub_settings
        topic = changelog_topic(settings)
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer = AIOKafkaConsumer(bootstrap_servers=hub.stack.kafka, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            await consumer.seek_to_beginning(*partitions)
            values = []
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values.extend(r.value for r in records if r.key == key)
            return values
        finally:
            await consumer.stop()

    return asyncio.run(read())


def test_erasure_shreds_details_tombstones_state_and_forgets_the_events(hub: Hub) -> None:
    address = new_address()
    first = accepted(hub.post("debt-signal", debt_signal(address, "2025-08-01"), "key-huur"))
    second = accepted(
        hub.post(
            "debt-signal",
            debt_signal(address, "2025-08-20", creditor_type="ENERGIE", creditor_name="Energie 01"),
            "key-energie",
        )
    )
    alert_id = alert_with(hub, second, "twente-match", contributions=2)
    household = household_of(hub, alert_id)
    # A backup of the data taken before the erasure (data backups leave the keyring out).
    backup = hub.query(
        "select event_id, household_id, key_id, event_type, domain, event_date, sealed "
        "from contact_details where household_id = :h",
        h=household,
    )
    assert {row[0] for row in backup} == {first, second}

    report = erase_by_address(hub, address, "AVG-2026-0042")
    assert report["keys_destroyed"] == 1 and report["contacts_deleted"] == 2
    assert report["alerts_deleted"] == 1
    for table in ("contact_details", "alerts", "keyring.household_keys"):
        assert hub.query(f"select 1 from {table} where household_id = :h", h=household) == []
    assert hub.team_get(f"/v1/alerts/{alert_id}").status_code == 404
    runs = hub.query("select summary::text from privacy_runs where reference = 'AVG-2026-0042'")
    assert len(runs) == 1 and household not in runs[0][0]

    # Restoring the old backup brings back ciphertext nobody can open any more.
    async def restore_and_open() -> None:
        engine = make_engine(DatabaseSettings(database_url=hub.stack.database_url))
        vault = Vault(VaultSettings(master_key=hub.stack.master_key))
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                for row in backup:
                    await session.execute(
                        RESTORE, dict(zip((*BACKUP_COLUMNS, "sealed"), row, strict=True))
                    )
                with pytest.raises(DecryptionFailed):
                    await open_contacts(session, vault, household, [first, second])
                await session.rollback()
        finally:
            await engine.dispose()

    asyncio.run(restore_and_open())

    # The matcher's state of the household is a tombstone on the changelog.
    key = json.dumps(household).encode()
    wait_for(lambda: read_changelog(hub, key)[-1:] == [None], "the tombstone of the household")

    # A new signal from a third creditor is not a Twente-match with the erased two.
    assert_only_a_crisis_alert(hub, address, "2025-08-25")


def test_retention_purge_expires_events_alerts_and_shreds_keys(hub: Hub) -> None:
    # 2019 dates: no other test's events are that old, so this purge touches only these.
    address = new_address()
    accepted(
        hub.post(
            "debt-signal",
            debt_signal(address, "2019-03-01", arrear_start_date="2018-12-01"),
            "key-huur",
        )
    )
    second = accepted(
        hub.post(
            "debt-signal",
            debt_signal(
                address,
                "2019-04-15",
                arrear_start_date="2018-12-01",
                creditor_type="ENERGIE",
                creditor_name="Energie 01",
            ),
            "key-energie",
        )
    )
    alert_id = alert_with(hub, second, "twente-match", contributions=2)
    household = household_of(hub, alert_id)
    # Closing comes with the team inbox; here the alert is closed as the inbox will close it.
    hub.execute(
        "update alerts set status = 'closed', outcome = 'niet-opgepakt', "
        "closed_at = '2019-05-01' where alert_id = :a",
        a=alert_id,
    )
    purges_before = matcher_counter(hub, "PURGE")

    result = hub.cli("privacy", "purge", "--as-of", "2020-01-01", "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert alert_id in report["alerts_expired"]
    assert report["contacts_deleted"]["debt-signal"] >= 2
    assert report["cutoffs"]["debt"] == "2019-07-05"  # 180 days of debt-signal retention
    assert hub.query("select 1 from contact_details where household_id = :h", h=household) == []
    assert (
        hub.query("select 1 from keyring.household_keys where household_id = :h", h=household) == []
    )
    assert hub.team_get(f"/v1/alerts/{alert_id}/contact").status_code == 410
    assert hub.team_get(f"/v1/alerts/{alert_id}").json()["personal_details_removed"] is True
    log = (hub.stack.workdir / "cli.log").read_text()
    assert "privacy.purged" in log and "Canary" not in log

    # The matcher has dropped the expired events: a third creditor makes no Twente-match.
    wait_for(
        lambda: (
            matcher_counter(hub, "PURGE") >= purges_before + report["households_purged_in_matcher"]
        ),
        "the matcher to apply the purge",
    )
    assert_only_a_crisis_alert(hub, address, "2019-07-10", arrear_start_date="2018-12-01")
    # Nor does an event dated before the cutoff that arrives after the purge.
    again = debt_signal(
        address,
        "2019-04-20",
        arrear_start_date="2018-12-01",
        creditor_type="WATER",
        creditor_name="Vitens",
    )
    again_id = accepted(hub.post("debt-signal", again, "key-energie"))
    wait_for(
        lambda: (
            "hub_matcher_events_expired_total"
            in httpx.get(f"{hub.stack.url('matcher')}/metrics").text
        ),
        "the matcher to count the expired event",
    )
    assert alerts_of(hub, again_id) == []


CANARY = {
    "name": "Kanarie Vogelaar",
    "birth_date": "1957-03-14",
    "bsn": "111222333",
    "street": "Kanarieweg",
}


def test_privacy_scan_finds_no_canary_anywhere_but_finds_a_planted_one(hub: Hub) -> None:
    address = {**new_address(), "street": CANARY["street"]}

    def planted(body: dict[str, Any], bsn: bool = False) -> dict[str, Any]:
        who = {"name": CANARY["name"], "birth_date": CANARY["birth_date"]}
        return {**body, "resident": {**who, **({"bsn": CANARY["bsn"]} if bsn else {})}}

    debt = planted(debt_signal(address, "2025-09-01", creditor_type="ZORG"), bsn=True)
    accepted(hub.post("debt-signal", debt, "key-zorg"))
    wvggz = planted(base_event(address, report_date="2025-09-02", reporter_category="FAMILY"))
    accepted(hub.post("wvggz-report", wvggz, "key-ggd"))
    triage = planted(
        base_event(address, handover_date="2025-09-03", outcome="HANDED_TO_SOCIAL_DOMAIN")
    )
    accepted(hub.post("streettriage-handover", triage, "key-triage"))
    care = planted(
        base_event(
            address, indication_date="2025-09-04", care_kind="WMO", message_type="WMO301_ALLOCATION"
        )
    )
    care_id = accepted(hub.post("care-indication", care, "key-wmo"))
    # A rejected request with the canaries in it, too.
    refused = {**debt, "amount_eur": "veel"}
    assert hub.post("debt-signal", refused, "key-zorg").status_code == 422
    alert_id = alert_with(hub, care_id, "multi-domain", contributions=4)
    assert (
        hub.team_get(f"/v1/alerts/{alert_id}/contact").json()["contacts"][0]["name"]
        == CANARY["name"]
    )

    logs = sorted(str(p) for p in hub.stack.workdir.glob("*.log"))
    scan_args = [
        "privacy",
        "scan",
        "--json",
        *(a for value in CANARY.values() for a in ("--canary", value)),
        *(a for path in logs for a in ("--logs", path)),
        *(
            a
            for s in ("ingest", "matcher", "notifier")
            for a in ("--metrics-url", f"{hub.stack.url(s)}/metrics")
        ),
    ]
    # It reads every record of the whole test run (a 100,000-row upload among them): a
    # limit against a hang, not a speed test.
    clean = hub.cli(*scan_args, timeout=SCAN_S)
    report = json.loads(clean.stdout)
    assert report["findings"] == 0, report["details"]
    assert clean.returncode == 0
    places = report["by_place"]
    settings = hub.stack.hub_settings
    for place in (
        f"topic {settings.topic_prefix}.debt-signal.v1",
        f"topic {settings.topic_prefix}.alerts.v1",
        f"topic {changelog_topic(settings)}",
        "table contact_details",
        "table alerts",
        "table access_log",
    ):
        assert places[place]["scanned"] > 0, place
    assert any(p.startswith("log ") and places[p]["scanned"] > 0 for p in places)
    assert sum(places[p]["scanned"] for p in places if p.startswith("metrics ")) > 0
    assert "contact_details.sealed" in report["skipped_encrypted_columns"]

    # The control: a record with the canaries planted on a hub topic is found.
    async def plant() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=hub.stack.kafka)
        await producer.start()
        try:
            value = json.dumps({"naam": CANARY["name"], "geboortedatum": CANARY["birth_date"]})
            await producer.send_and_wait(deadletter_topic(settings), value.encode())
        finally:
            await producer.stop()

    asyncio.run(plant())
    dirty = hub.cli(*scan_args, timeout=SCAN_S)
    assert dirty.returncode == 1
    found = json.loads(dirty.stdout)
    assert found["findings"] >= 1
    assert {d["place"] for d in found["details"]} == {f"topic {deadletter_topic(settings)}"}
    assert CANARY["name"] not in dirty.stdout  # the report names places, never values
