"""The privacy scan's detectors: they find planted personal data and nothing the hub publishes."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from services.cli.demo import replay
from services.cli.synthetic import Generator, SyntheticEvent
from services.matcher.engine import Household
from services.privacy.scan import Detector, Finding, Kind, ScanResult, hub_topics
from services.shared.avro import AvroCodec
from services.shared.config import DEFAULT_SCHEMAS_DIR, HubSettings, PseudonymSettings
from services.shared.events import ALERT_SCHEMA_NAME
from services.shared.identity import Pseudonymiser, bsn_is_valid

TODAY = dt.date(2026, 6, 1)
CANARY = "Zwanenburg-7f3e"
DETECTOR = Detector([CANARY], today=TODAY)
CODEC = AvroCodec(DEFAULT_SCHEMAS_DIR)


def valid_bsn(first_eight: str) -> str:
    """Completes eight digits with the check digit, when one exists (as the synthetic data does)."""
    total = sum(int(d) * w for d, w in zip(first_eight, range(9, 1, -1), strict=True))
    assert total % 11 < 10, "these eight digits have no valid check digit"
    return first_eight + str(total % 11)


BSN = valid_bsn("11122233")
OTHER_BSN = valid_bsn("27364512")


def test_valid_bsn_helper_makes_numbers_that_pass_the_eleven_check() -> None:
    assert bsn_is_valid(BSN) and bsn_is_valid(OTHER_BSN)


@pytest.mark.parametrize(
    "text",
    [
        BSN,
        f"bsn={BSN}",
        f'{{"resident": {{"bsn": "{BSN}"}}}}',
        f"lookup failed for {OTHER_BSN}.",
    ],
)
def test_a_valid_bsn_in_text_is_found(text: str) -> None:
    assert DETECTOR.kinds_in_text(text) == {Kind.BSN}


def test_a_bsn_in_a_record_is_found_as_string_and_as_number() -> None:
    hits = DETECTOR.hits_in_record({"person": {"bsn": BSN}, "ids": [1, int(OTHER_BSN)]})
    assert hits == {("person.bsn", Kind.BSN), ("ids[1]", Kind.BSN)}


@pytest.mark.parametrize(
    "text",
    [
        "7511 AB 12",
        "7511AB, 12",
        "Kerkstraat 12, 7511 AB Enschede",
        "Kerkstraat 12a, 7511AB Enschede",
        "7511AB|12|A|",
        "adres: 7511ab 140",
    ],
)
def test_postcode_with_house_number_is_found_in_several_spellings(text: str) -> None:
    assert DETECTOR.kinds_in_text(text) == {Kind.POSTCODE_HOUSE_NUMBER}


def test_postcode_and_house_number_in_the_same_record_are_found() -> None:
    raw = {"address": {"street": "Markt", "house_number": 4, "postcode": "7511 ab"}}
    assert DETECTOR.hits_in_record(raw) == {("address.postcode", Kind.POSTCODE_HOUSE_NUMBER)}


def test_birth_date_with_a_name_is_found_in_a_record() -> None:
    row = {"naam": "Jan de Vries", "geboren": dt.date(1970, 5, 1), "code": "GM0153"}
    assert DETECTOR.hits_in_record(row) == {("geboren", Kind.BIRTH_DATE_WITH_NAME)}
    nested = {"resident": {"name": "Fatma Yilmaz", "birth_date": "12-05-1984"}}
    assert DETECTOR.hits_in_record(nested) == {("resident.birth_date", Kind.BIRTH_DATE_WITH_NAME)}


def test_birth_date_with_a_name_is_found_in_a_log_line() -> None:
    line = "2026-05-30T10:00:00Z WARNING could not match Henk Oude Luttikhuis (1958-02-11)"
    assert DETECTOR.kinds_in_text(line) == {Kind.BIRTH_DATE_WITH_NAME}
    far_apart = "Jan de Vries" + " " * 80 + "1970-05-01"
    assert DETECTOR.kinds_in_text(far_apart) == set()


def test_canaries_are_found_whatever_their_case() -> None:
    assert DETECTOR.kinds_in_text(f"note: {CANARY.upper()} was here") == {Kind.CANARY}
    assert DETECTOR.hits_in_record({"x": [CANARY.lower()]}) == {("x[0]", Kind.CANARY)}


def test_short_canaries_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        Detector(["abc"])


@pytest.mark.parametrize(
    "text",
    [
        "hh1-3f2a123456789bc0d1e2f30415263748596a7b8c",
        "ps1-123456782aabbccddeeff00112233445566778899",
        str(uuid.UUID("12345678-1234-5678-1234-123456782000")),
        "received_at=1740830400000",
        "123456789",  # nine digits that fail the eleven-check
        "postcode 7511 AB in Enschede",
        "tussen 2015 en 2016 zijn 12 meldingen gedaan",
        "Jan de Vries, gemeld op 01-03-2025",
        "7511 SS 12",  # SS is not used in Dutch postcodes
    ],
)
def test_what_only_resembles_personal_data_is_not_found(text: str) -> None:
    assert DETECTOR.kinds_in_text(text) == set()


def test_a_recent_date_next_to_a_name_is_not_found_in_a_record() -> None:
    assert DETECTOR.hits_in_record({"creditor_name": "Cak Zvw 01", "date": TODAY}) == set()
    # A timestamp is when something happened to the hub, not a birth date.
    assert (
        DETECTOR.hits_in_record(
            {"name": "Jan de Vries", "at": dt.datetime(1970, 1, 1, tzinfo=dt.UTC)}
        )
        == set()
    )


def _published(events: list[SyntheticEvent]) -> dict[str, list[Any]]:
    """What the hub itself writes for these events: source records, matcher state, alerts.

    Records and alerts go through the Avro codec as on the topics; the state through JSON as
    in the Faust changelog.
    """
    pseudonyms = Pseudonymiser(PseudonymSettings(pseudonym_secret=SecretStr("s" * 32)))
    states: dict[str, Household] = {}
    records: list[dict[str, Any]] = []
    alerts: dict[str, dict[str, Any]] = {}
    received_at = dt.datetime(2025, 12, 31, 12, tzinfo=dt.UTC)
    for step in replay(events, pseudonyms, states, received_at):
        records.append(CODEC.decode(CODEC.encode(step.schema_name, step.record))[1])
        for alert in step.alerts:
            alerts[alert["alert_id"]] = CODEC.decode(CODEC.encode(ALERT_SCHEMA_NAME, alert))[1]
    return {
        "records": records,
        "states": [json.loads(json.dumps(s.to_json())) for s in states.values()],
        "alerts": list(alerts.values()),
    }


@pytest.fixture(scope="module")
def synthetic() -> list[SyntheticEvent]:
    return Generator(seed=11, scale=0.02).events()


def test_nothing_is_found_in_what_the_hub_publishes(synthetic: list[SyntheticEvent]) -> None:
    published = _published(synthetic)
    assert len(published["records"]) >= 300
    assert published["alerts"], "the sample must raise alerts, or this test proves little"
    for kind, items in published.items():
        for item in items:
            assert DETECTOR.hits_in_record(item) == set(), f"{kind}: {item}"
            # The same data written as one structured log line.
            line = json.dumps(item, default=str, ensure_ascii=False)
            assert DETECTOR.kinds_in_text(line) == set(), f"{kind} as text: {line}"


def test_the_raw_partner_events_are_found(synthetic: list[SyntheticEvent]) -> None:
    for event in synthetic:
        kinds = {kind for _, kind in DETECTOR.hits_in_record(event.body)}
        expected = {Kind.BIRTH_DATE_WITH_NAME, Kind.POSTCODE_HOUSE_NUMBER}
        if "bsn" in event.body["resident"]:
            expected.add(Kind.BSN)
        assert kinds == expected, event.body["partner_event_id"]


def test_the_report_counts_per_place_and_never_holds_the_value() -> None:
    kafka = ScanResult()
    kafka.tally("topic hub.debt-signal.v1", "partition 0 offset 0", set())
    kafka.tally(
        "topic hub.debt-signal.v1",
        "partition 0 offset 1",
        DETECTOR.hits_in_record({"note": f"{CANARY} {BSN}"}),
    )
    database = ScanResult(skipped=["contact_details.sealed"])
    database.tally("table alerts", "alert_id=a1", set())

    report = kafka.merge(database).to_json()

    assert report == {
        "findings": 2,
        "by_place": {
            "topic hub.debt-signal.v1": {
                "scanned": 2,
                "findings": 2,
                "kinds": {"bsn": 1, "canary": 1},
            },
            "table alerts": {"scanned": 1, "findings": 0, "kinds": {}},
        },
        "details": [
            {
                "place": "topic hub.debt-signal.v1",
                "location": "partition 0 offset 1",
                "field": "note",
                "kind": "bsn",
            },
            {
                "place": "topic hub.debt-signal.v1",
                "location": "partition 0 offset 1",
                "field": "note",
                "kind": "canary",
            },
        ],
        "skipped_encrypted_columns": ["contact_details.sealed"],
    }
    text = json.dumps(report)
    assert BSN not in text and CANARY.casefold() not in text.casefold()
    assert kafka.findings[0] == Finding(
        "topic hub.debt-signal.v1", "partition 0 offset 1", "note", Kind.BSN
    )


def test_hub_topics_are_the_prefixed_ones_and_the_matcher_changelogs() -> None:
    settings = HubSettings(topic_prefix="t1", matcher_app_id="t1-matcher")
    names = [
        "__consumer_offsets",
        "t1.debt-signal.v1",
        "t1.alerts.v1",
        "t1-matcher-households-changelog",
        "t10.debt-signal.v1",
        "other.alerts.v1",
    ]
    assert hub_topics(names, settings) == [
        "t1-matcher-households-changelog",
        "t1.alerts.v1",
        "t1.debt-signal.v1",
    ]
