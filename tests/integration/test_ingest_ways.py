"""The four ways in (one event, a batch, a CSV file, the Kafka intake topics), each with its
refusals, its idempotency and its count: what was offered is accepted or rejected, and
exactly what was accepted is on the source topic, once."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from typing import Any

import fastavro
import pytest
from aiokafka import AIOKafkaProducer

from services.ingest.csvfile import write_csv
from services.ingest.models import DebtSignalIn
from services.shared.avro import MAGIC, AvroCodec
from services.shared.config import DEFAULT_SCHEMAS_DIR
from services.shared.events import EventType
from services.shared.topics import intake_topic
from tests.integration.fixtures import (
    Hub,
    add_partner,
    debt_signal,
    new_address,
    published,
    service_metric,
    wait_for,
)

pytestmark = pytest.mark.integration

CANARY_NAME = "Canary Testpersoon"
DAY = "2025-11-03"


def new_partner(hub: Hub, partner_type: str = "ENERGIE", *extra: str) -> tuple[str, str]:
    partner_id = f"{partner_type.lower()}-{uuid.uuid4().hex[:8]}"
    key = add_partner(
        hub, partner_id, "--type", partner_type, "--event-type", "debt-signal", *extra
    )
    return partner_id, key


def signal(day: str = DAY, **extra: Any) -> dict[str, Any]:
    return debt_signal(new_address(), day, creditor_type="ENERGIE", **extra)


def ids_of(events: list[dict[str, Any]]) -> list[str]:
    return sorted(e["partner_event_id"] for e in events)


def test_a_repeated_event_is_answered_as_before_and_published_once(hub: Hub) -> None:
    partner_id, key = new_partner(hub)
    event = signal()
    first = hub.post("debt-signal", event, key)
    again = hub.post("debt-signal", event, key)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"

    other = {**signal(), "partner_event_id": event["partner_event_id"]}
    conflict = hub.post("debt-signal", other, key)
    assert conflict.status_code == 409
    assert conflict.json()["errors"][0]["field"] == "partner_event_id"
    assert ids_of(published(hub, "debt-signal", partner_id)) == [event["partner_event_id"]]


def test_a_batch_reports_each_event_and_publishes_only_the_accepted(hub: Hub) -> None:
    partner_id, key = new_partner(hub)
    good, repeat_me, also_good = signal(), signal(), signal()
    bad_postcode = signal()
    bad_postcode["address"]["postcode"] = "0000 XX"
    with_bsn = signal()
    with_bsn["resident"]["bsn"] = "111222333"
    future = signal("2099-01-01")
    clash = {**signal(), "partner_event_id": good["partner_event_id"]}
    batch = [good, bad_postcode, repeat_me, with_bsn, repeat_me, future, clash, also_good, 42]

    response = hub.post_batch("debt-signal", batch, key)
    assert response.status_code == 200, response.text
    report = response.json()
    assert [r["status"] for r in report["results"]] == [
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "duplicate",
        "rejected",
        "rejected",
        "accepted",
        "rejected",
    ]
    fields = {
        r["index"]: [e["field"] for e in r["errors"]] for r in report["results"] if "errors" in r
    }
    assert fields == {
        1: ["address.postcode"],
        3: ["resident.bsn"],
        5: ["signal_date"],
        6: ["partner_event_id"],
        8: ["body"],
    }
    assert (report["accepted"], report["duplicate"], report["rejected"]) == (3, 1, 5)
    assert report["results"][4]["event_id"] == report["results"][2]["event_id"]
    assert CANARY_NAME not in response.text and "111222333" not in response.text
    expected = ids_of([good, repeat_me, also_good])
    assert ids_of(published(hub, "debt-signal", partner_id)) == expected

    # The same batch again: the accepted ones are repeats, nothing new is published.
    again = hub.post_batch("debt-signal", batch, key).json()
    assert (again["accepted"], again["duplicate"], again["rejected"]) == (0, 4, 5)
    assert ids_of(published(hub, "debt-signal", partner_id)) == expected


def test_an_idempotency_key_gives_the_first_answer_again(hub: Hub) -> None:
    partner_id, key = new_partner(hub)
    batch = [signal(), signal()]
    first = hub.post_batch("debt-signal", batch, key, idempotency_key="maart-2025-1")
    again = hub.post_batch("debt-signal", batch, key, idempotency_key="maart-2025-1")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and first.json()["accepted"] == 2
    assert again.headers["Idempotent-Replayed"] == "true"
    other = hub.post_batch("debt-signal", [signal()], key, idempotency_key="maart-2025-1")
    assert other.status_code == 409
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"
    bad_key = hub.post_batch("debt-signal", [signal()], key, idempotency_key="sleutel met spatie")
    assert bad_key.status_code == 422
    assert bad_key.json()["errors"][0]["field"] == "Idempotency-Key"
    assert ids_of(published(hub, "debt-signal", partner_id)) == ids_of(batch)


def test_a_key_whose_first_request_got_no_answer_is_taken_over_once_abandoned(
    hub: Hub,
) -> None:
    partner_id, key = new_partner(hub)
    batch = [signal(), signal()]
    first = hub.post_batch("debt-signal", batch, key, idempotency_key="april-2025-1")
    assert first.json()["accepted"] == 2
    # As if ingest stopped after the work and before it stored the answer.
    where = "where partner_id = :p and key = 'april-2025-1'"
    hub.execute(
        f"update idempotency_keys set status_code = null, response = null {where}", p=partner_id
    )

    waiting = hub.post_batch("debt-signal", batch, key, idempotency_key="april-2025-1")
    assert waiting.status_code == 409
    assert waiting.json()["errors"] == [
        {
            "field": "Idempotency-Key",
            "message": "the first request with this key is still being handled",
        }
    ]

    hub.execute(
        f"update idempotency_keys set created_at = now() - interval '16 minutes' {where}",
        p=partner_id,
    )
    taken_over = hub.post_batch("debt-signal", batch, key, idempotency_key="april-2025-1")
    assert taken_over.status_code == 200 and "Idempotent-Replayed" not in taken_over.headers
    assert (taken_over.json()["accepted"], taken_over.json()["duplicate"]) == (0, 2)
    # Its answer is the key's now.
    again = hub.post_batch("debt-signal", batch, key, idempotency_key="april-2025-1")
    assert again.json() == taken_over.json() and again.headers["Idempotent-Replayed"] == "true"
    assert ids_of(published(hub, "debt-signal", partner_id)) == ids_of(batch)


def test_a_batch_over_the_size_limit_is_refused_whole(hub: Hub) -> None:
    partner_id, key = new_partner(hub)
    response = hub.post_batch("debt-signal", [signal()] * 10_001, key)
    assert response.status_code == 413
    assert response.json()["errors"][0]["field"] == "body"
    assert hub.post_batch("debt-signal", {"not": "a list"}, key).status_code == 422
    assert published(hub, "debt-signal", partner_id) == []


def unchecked(event: dict[str, Any]) -> DebtSignalIn:
    """The event as its model, with its postcode as sent even when no postcode looks so:
    for files and intake records that must carry a broken field to the service."""
    postcode = event["address"]["postcode"]
    valid = {**event, "address": {**event["address"], "postcode": "7511 AB"}}
    model = DebtSignalIn.model_validate(valid)
    address = model.address.model_copy(update={"postcode": postcode})
    return model.model_copy(update={"address": address})


def csv_file(events: list[dict[str, Any]], *extra_lines: str, delimiter: str = ";") -> bytes:
    lines = list(
        write_csv(
            EventType.DEBT_SIGNAL,
            [unchecked(e) for e in events],
            delimiter=delimiter,
        )
    )
    return ("\ufeff" + "".join(lines) + "".join(extra_lines)).encode()


def test_an_upload_reports_each_bad_line_and_publishes_the_good_ones(hub: Hub) -> None:
    partner_id, key = new_partner(hub)
    good = [signal() for _ in range(4)]
    with_bsn = signal()
    with_bsn["resident"]["bsn"] = "111222333"
    content = csv_file([*good, with_bsn], delimiter=",")
    _, first_row = content.decode().splitlines()[:2]
    cells = first_row.split(",")
    bad_date = ",".join([*cells[:2], "31-02-1980", *cells[3:]]).replace(cells[0], "bad-date")
    short = ",".join(cells[:5]).replace(cells[0], "short")
    content += f"{bad_date}\n{short}\n".encode()

    response = hub.upload("debt-signal", content, key)
    assert response.status_code == 202, response.text
    upload_id = response.json()["upload_id"]
    report = hub.finished_upload(upload_id, key)
    assert report["status"] == "done"
    assert report["rows"] == {"read": 7, "accepted": 4, "duplicate": 0, "rejected": 3}
    problems = [(p["line"], p["field"]) for p in report["problems"]]
    assert problems == [(6, "resident.bsn"), (7, "resident.birth_date"), (8, "row")]
    assert CANARY_NAME not in json.dumps(report) and "31-02-1980" not in json.dumps(report)
    assert ids_of(published(hub, "debt-signal", partner_id)) == ids_of(good)

    # Sent again under one Idempotency-Key: one upload; without: its rows are repeats.
    keyed = [hub.upload("debt-signal", content, key, idempotency_key="feb-2025") for _ in "12"]
    assert keyed[0].json() == keyed[1].json()
    repeat = hub.finished_upload(keyed[0].json()["upload_id"], key)
    assert repeat["rows"] == {"read": 7, "accepted": 0, "duplicate": 4, "rejected": 3}
    assert ids_of(published(hub, "debt-signal", partner_id)) == ids_of(good)

    # Only its own partner sees an upload.
    _, other_key = new_partner(hub)
    assert hub.upload_report(upload_id, other_key).status_code == 404


def test_an_upload_with_an_unusable_header_is_refused_at_once(hub: Hub) -> None:
    partner_id, key = new_partner(hub)
    content = csv_file([signal()]).decode().replace("creditor_name", "schuldeiser")
    response = hub.upload("debt-signal", content.encode(), key)
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"header"}
    # The column by position, never the cell (a first line may hold data); the hint is safe.
    assert "schuldeiser" not in response.text and "creditor_name" in response.text
    assert hub.query("select count(*) from uploads where partner_id = :p", p=partner_id)[0][0] == 0
    assert published(hub, "debt-signal", partner_id) == []


def test_a_line_without_an_end_is_never_held_whole(hub: Hub) -> None:
    """A file whose lines end in CR alone is one line to the hub: refused at its first MiB.
    A long line further on fails the upload there; the rows before it are in."""
    partner_id, key = new_partner(hub)
    rows = [signal() for _ in range(7_000)]
    lone_cr = csv_file(rows).replace(b"\n", b"\r")
    assert len(lone_cr) > 2**20
    refused = hub.upload("debt-signal", lone_cr, key)
    assert refused.status_code == 422, refused.text
    assert [e["field"] for e in refused.json()["errors"]] == ["file"]
    assert "line 1 is longer than 1 MiB" in refused.text
    assert hub.query("select count(*) from uploads where partner_id = :p", p=partner_id)[0][0] == 0

    good = [signal(), signal()]
    runaway = b'"' + b"x" * 2**20 * 2 + b"\n"
    response = hub.upload("debt-signal", csv_file(good) + runaway, key)
    assert response.status_code == 202, response.text
    report = hub.finished_upload(response.json()["upload_id"], key)
    assert report["status"] == "failed"
    assert report["failure"].startswith("line 4 is longer than 1 MiB without a line end")
    assert report["rows"]["accepted"] == 2
    assert ids_of(published(hub, "debt-signal", partner_id)) == ids_of(good)


def intake_record(event: dict[str, Any], version: int = 2) -> bytes:
    """A partner producer's record: Avro single-object encoding of the intake schema."""
    codec = AvroCodec(DEFAULT_SCHEMAS_DIR / "intake")
    schema = next(
        v
        for v in codec.versions()
        if v.name == "nl.twente.hub.intake.DebtSignalIntake" and v.version == version
    )
    record = unchecked(event).model_dump()
    if version == 1:
        record.pop("missed_payments")
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema.parsed, record)
    return MAGIC + schema.fingerprint + buffer.getvalue()


def produce(hub: Hub, records: list[tuple[bytes, str | None]]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=hub.stack.kafka)
        await producer.start()
        try:
            topic = intake_topic(hub.stack.hub_settings, EventType.DEBT_SIGNAL)
            for value, partner in records:
                headers = [("hub-partner", partner.encode())] if partner else []
                await producer.send_and_wait(topic, value, headers=headers)
        finally:
            await producer.stop()

    asyncio.run(send())


def letters(hub: Hub, *args: str) -> list[dict[str, Any]]:
    done = hub.cli("deadletter", "list", "--json", *args)
    assert done.returncode == 0, (hub.stack.workdir / "cli.log").read_text()[-1500:]
    assert CANARY_NAME not in done.stdout
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def test_kafka_intake_forwards_valid_records_and_dead_letters_the_rest(hub: Hub) -> None:
    partner_id, _ = new_partner(hub)
    v1, v2 = signal(), signal(missed_payments=3)
    bad = signal()
    bad["address"]["postcode"] = "0000 XX"
    with_bsn = signal()
    with_bsn["resident"]["bsn"] = "111222333"
    stranger_id = f"onbekend-{uuid.uuid4().hex[:8]}"
    strangers = signal()
    produce(
        hub,
        [
            (intake_record(v1, version=1), partner_id),
            (intake_record(v2), partner_id),
            (intake_record(v2), partner_id),  # a producer's retry
            (intake_record(bad), partner_id),
            (intake_record(with_bsn), partner_id),
            (b"not avro", partner_id),
            (intake_record(strangers), stranger_id),
        ],
    )

    def forwarded() -> list[dict[str, Any]] | None:
        found = published(hub, "debt-signal", partner_id)
        return found if len(found) == 2 else None

    events = {e["partner_event_id"]: e for e in wait_for(forwarded, "the two valid records")}
    assert events[v1["partner_event_id"]]["missed_payments"] is None
    assert events[v2["partner_event_id"]]["missed_payments"] == 3

    def dead() -> list[dict[str, Any]] | None:
        found = letters(hub, "--partner", partner_id) + letters(hub, "--partner", stranger_id)
        return found if len(found) == 4 else None

    reasons = sorted((d["reason"], d["detail"].split(":")[0]) for d in wait_for(dead, "4 letters"))
    assert reasons == [
        ("bsn-not-allowed", "resident.bsn"),
        ("invalid", "address.postcode"),
        ("undecodable", "not Avro single-object encoding (missing C3 01 header)"),
        ("unknown-partner", "header hub-partner"),
    ]

    # After the fix (the partner is registered) the letter is replayed, once.
    add_partner(hub, stranger_id, "--type", "ENERGIE", "--event-type", "debt-signal")
    done = hub.cli("deadletter", "replay", "--partner", stranger_id, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["replayed"] == 1
    wait_for(lambda: published(hub, "debt-signal", stranger_id) or None, "the replayed record")
    assert letters(hub, "--partner", stranger_id)[0]["replayed_at"] is not None
    again = hub.cli("deadletter", "replay", "--partner", stranger_id, "--json")
    assert json.loads(again.stdout)["replayed"] == 0
    assert ids_of(published(hub, "debt-signal", stranger_id)) == [strangers["partner_event_id"]]
    assert (
        service_metric(
            hub, "ingest", "hub_ingest_intake_deadlettered_total", reason="unknown-partner"
        )
        >= 1
    )


def test_kafka_intake_dead_letters_records_with_an_unreadable_partner_header_and_goes_on(
    hub: Hub,
) -> None:
    # A header without a value, one with NUL (which PostgreSQL cannot compare) and one that is
    # no UTF-8 name no partner; the intake must not stop for them.
    partner_id, _ = new_partner(hub)
    after = signal()
    odd_headers: list[list[tuple[str, bytes | None]]] = [
        [("hub-partner", None)],
        [("hub-partner", f"{partner_id}\x00".encode())],
        [("hub-partner", b"\xff" + partner_id.encode())],
    ]
    topic = intake_topic(hub.stack.hub_settings, EventType.DEBT_SIGNAL)

    async def send() -> set[int]:
        producer = AIOKafkaProducer(bootstrap_servers=hub.stack.kafka)
        await producer.start()
        try:
            offsets = set()
            for headers in odd_headers:
                sent = await producer.send_and_wait(
                    topic, intake_record(signal()), headers=headers, partition=0
                )
                offsets.add(sent.offset)
            await producer.send_and_wait(
                topic, intake_record(after), headers=[("hub-partner", partner_id.encode())]
            )
            return offsets
        finally:
            await producer.stop()

    offsets = asyncio.run(send())
    published_after = wait_for(
        lambda: published(hub, "debt-signal", partner_id) or None, "the record after them"
    )
    assert ids_of(published_after) == [after["partner_event_id"]]

    def dead() -> list[dict[str, Any]] | None:
        found = [
            d
            for d in letters(hub, "--reason", "unknown-partner")
            if (d["source_topic"], d["source_partition"]) == (topic, 0)
            and d["source_offset"] in offsets
        ]
        return found if len(found) == len(offsets) else None

    for letter in wait_for(dead, "a letter for each odd header"):
        assert letter["detail"] == "header hub-partner: no active partner"


def test_retention_deletes_receipts_and_uploads_past_their_time(hub: Hub) -> None:
    partner_id, key = new_partner(hub)
    event = signal()
    first = hub.post("debt-signal", event, key).json()
    upload_id = hub.upload("debt-signal", csv_file([signal()]), key).json()["upload_id"]
    hub.finished_upload(upload_id, key)
    # Backdated to 2019: the purge of 2020-01-01 is then past their retention, and no other
    # test's bookkeeping is that old.
    hub.execute(
        "update ingest_receipts set received_at = '2019-01-01' "
        "where partner_id = :p and partner_event_id = :e",
        p=partner_id,
        e=event["partner_event_id"],
    )
    hub.execute("update uploads set created_at = '2019-01-01' where upload_id = :u", u=upload_id)
    done = hub.cli("privacy", "purge", "--as-of", "2020-01-01", "--json")
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report["receipts_deleted"] >= 1 and report["uploads_deleted"] >= 1
    assert hub.upload_report(upload_id, key).status_code == 404
    assert (
        hub.query("select count(*) from upload_problems where upload_id = :u", u=upload_id)[0][0]
        == 0
    )
    # Forgotten: the event counts as new again, as the matcher has forgotten it too.
    again = hub.post("debt-signal", event, key)
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers
    assert again.json() == first
