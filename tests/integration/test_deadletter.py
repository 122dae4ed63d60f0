"""Intake dead letters (forbidden type, future date, conflict) and every way to replay them."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from services.shared.events import EventType
from services.shared.kafka import read_to_end
from services.shared.region import AMSTERDAM
from services.shared.topics import (
    DEADLETTER_HEADERS,
    intake_deadletter_topic,
    intake_topic,
    source_topic,
)
from tests.integration.fixtures import (
    Hub,
    add_partner,
    debt_signal,
    new_address,
    published,
    service_metric,
    start_stack,
    wait_for,
)
from tests.integration.test_ingest_ways import intake_record, letters

pytestmark = pytest.mark.integration

DAY = "2025-11-03"
#: Where a record came from: (topic, partition, offset), as a letter's hub-source-* say.
Source = tuple[str, int, int]


def partner_id_of(partner_type: str) -> str:
    return f"{partner_type.lower().replace('_', '-')}-{uuid.uuid4().hex[:8]}"


def register(hub: Hub, partner_id: str, partner_type: str, event_type: str) -> None:
    add_partner(hub, partner_id, "--type", partner_type, "--event-type", event_type)


def signal(day: str = DAY, **extra: Any) -> dict[str, Any]:
    return debt_signal(new_address(), day, creditor_type="ENERGIE", **extra)


def send(hub: Hub, records: list[tuple[bytes, str]], key: bytes | None = None) -> list[Source]:
    """Writes the records to the debt-signal intake topic as a partner's producer would, one
    after the other; where each landed."""

    async def write() -> list[Source]:
        producer = AIOKafkaProducer(bootstrap_servers=hub.stack.kafka)
        await producer.start()
        try:
            topic = intake_topic(hub.stack.hub_settings, EventType.DEBT_SIGNAL)
            sent = []
            for value, partner in records:
                meta = await producer.send_and_wait(
                    topic, value, key=key, headers=[("hub-partner", partner.encode())]
                )
                sent.append((meta.topic, meta.partition, meta.offset))
            return sent
        finally:
            await producer.stop()

    return asyncio.run(write())


async def produce_to(hub: Hub, topic: str, value: bytes) -> None:
    """One record without headers, as a stray producer would write it."""
    producer = AIOKafkaProducer(bootstrap_servers=hub.stack.kafka)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


def records_of(hub: Hub, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    async def read() -> list[ConsumerRecord[bytes, bytes]]:
        return [r async for r in read_to_end(hub.stack.kafka, [topic])]

    return asyncio.run(read())


def times_on_intake(hub: Hub, value: bytes) -> int:
    """How often the record is on the debt-signal intake topic: sent once, plus its replays."""
    topic = intake_topic(hub.stack.hub_settings, EventType.DEBT_SIGNAL)
    return sum(r.value == value for r in records_of(hub, topic))


def raw_letter(hub: Hub, source: Source) -> ConsumerRecord[bytes, bytes]:
    """The record on the intake dead-letter topic that was refused at `source`."""

    def found() -> list[ConsumerRecord[bytes, bytes]]:
        return [
            r
            for r in records_of(hub, intake_deadletter_topic(hub.stack.hub_settings))
            if source_of(r) == source
        ]

    (letter,) = wait_for(found, f"the dead letter of {source}")
    return letter


def source_of(record: ConsumerRecord[bytes, bytes]) -> Source | None:
    headers = {k: (v or b"").decode() for k, v in record.headers}
    if "hub-source-topic" not in headers:
        return None
    return (
        headers["hub-source-topic"],
        int(headers["hub-source-partition"]),
        int(headers["hub-source-offset"]),
    )


def listed(hub: Hub, partner_id: str, count: int) -> dict[Source, dict[str, Any]]:
    """`hub deadletter list --json --partner P` once it shows `count` letters, by source."""

    def found() -> list[dict[str, Any]] | None:
        shown = letters(hub, "--partner", partner_id)
        return shown if len(shown) == count else None

    shown = wait_for(found, f"{count} dead letters of {partner_id}")
    return {(d["source_topic"], d["source_partition"], d["source_offset"]): d for d in shown}


def name(letter: dict[str, Any]) -> str:
    """The letter as `list` names it and `replay --letter` takes it."""
    return f"{letter['topic']}/{letter['partition']}@{letter['offset']}"


def replay(hub: Hub, *args: str) -> dict[str, Any]:
    done = hub.cli("deadletter", "replay", "--json", *args)
    assert done.returncode == 0, (hub.stack.workdir / "cli.log").read_text()[-1500:]
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def ids_of(events: list[dict[str, Any]]) -> list[str]:
    return sorted(e["partner_event_id"] for e in events)


def published_ids(hub: Hub, partner_id: str, count: int) -> list[str]:
    """The partner's events on the debt-signal source topic once there are `count`."""

    def found() -> list[dict[str, Any]] | None:
        events = published(hub, "debt-signal", partner_id)
        return events if len(events) == count else None

    return ids_of(wait_for(found, f"{count} events of {partner_id} on the source topic"))


def kafka_counts(hub: Hub, partner_type: str, reason: str) -> dict[str, float]:
    """Ingest's debt-signal counters of the kafka channel that a refusal for `reason` moves."""

    def metric(name: str, **labels: str) -> float:
        return service_metric(hub, "ingest", f"hub_ingest_{name}_total", **labels)

    events = {"event_type": "debt-signal", "channel": "kafka"}
    return {
        "offered": metric("events_offered", partner_type=partner_type, **events),
        "accepted": metric("events_accepted", partner_type=partner_type, **events),
        "rejected": metric("events_rejected", reason=reason, **events),
        "deadlettered": metric("intake_deadlettered", reason=reason),
    }


def moved(
    hub: Hub, before: dict[str, float], partner_type: str, reason: str, expected: dict[str, int]
) -> dict[str, int]:
    """How far the counters moved, once each has moved as far as `expected` (each record is
    counted by the intake step that handles it, records of two partitions apart); what they
    show after a minute's wait otherwise, for the caller's assertion to name."""

    def delta() -> dict[str, int]:
        now = kafka_counts(hub, partner_type, reason)
        return {k: round(now[k] - before[k]) for k in now}

    with contextlib.suppress(AssertionError):
        wait_for(
            lambda: all(moved >= expected.get(k, 0) for k, moved in delta().items()),
            f"the intake's counters for {reason} to move",
        )
    return delta()


def assert_dead_lettered_unchanged(
    letter: ConsumerRecord[bytes, bytes],
    value: bytes,
    key: bytes | None,
    partner_id: str,
    source: Source,
    reason: str,
) -> dict[str, str]:
    """The letter is the record as sent, with the documented headers; its headers."""
    assert letter.value == value and letter.key == key
    headers = {k: (v or b"").decode() for k, v in letter.headers}
    assert headers["hub-partner"] == partner_id
    assert headers["hub-reason"] == reason
    assert (headers["hub-source-topic"], headers["hub-source-partition"]) == (
        source[0],
        str(source[1]),
    )
    assert headers["hub-source-offset"] == str(source[2])
    assert re.fullmatch("[0-9a-f]{32}", headers["hub-correlation-id"])
    assert "Canary" not in headers["hub-detail"]
    return headers


def test_a_partner_writing_to_another_types_intake_topic_gets_a_forbidden_type_letter(
    hub: Hub,
) -> None:
    # The GGD may publish Wvggz reports only; it writes a debt signal to the debt-signal topic.
    partner_id = partner_id_of("GGD_MELDFUNCTIE")
    register(hub, partner_id, "GGD_MELDFUNCTIE", "wvggz-report")
    before = kafka_counts(hub, "GGD_MELDFUNCTIE", "forbidden-type")
    value, key = intake_record(signal()), f"ggd-{uuid.uuid4().hex}".encode()
    (source,) = send(hub, [(value, partner_id)], key=key)

    headers = assert_dead_lettered_unchanged(
        raw_letter(hub, source), value, key, partner_id, source, "forbidden-type"
    )
    assert headers["hub-detail"] == "event_type: partner may not publish debt-signal events"
    expected = {
        "offered": 1,
        "accepted": 0,
        "rejected": 1,
        "deadlettered": 1,
    }
    assert moved(hub, before, "GGD_MELDFUNCTIE", "forbidden-type", expected) == expected
    # Ingest publishes before it writes the letter: with the letter there, nothing came.
    assert published(hub, "debt-signal", partner_id) == []
    (shown,) = listed(hub, partner_id, 1).values()
    assert (shown["reason"], shown["detail"]) == ("forbidden-type", headers["hub-detail"])


def test_an_intake_event_dated_beyond_the_tolerance_gets_a_future_date_letter(hub: Hub) -> None:
    partner_id = partner_id_of("WATER")
    register(hub, partner_id, "WATER", "debt-signal")
    today = dt.datetime.now(AMSTERDAM).date()
    tomorrow, later = (
        signal(str(today + dt.timedelta(days=1))),
        signal(str(today + dt.timedelta(days=40))),
    )
    before = kafka_counts(hub, "WATER", "future-date")
    value = intake_record(later)
    _, source = send(hub, [(intake_record(tomorrow), partner_id), (value, partner_id)])

    headers = assert_dead_lettered_unchanged(
        raw_letter(hub, source), value, None, partner_id, source, "future-date"
    )
    # 40 days ahead when sent; 39 if the day turned meanwhile. The stack's tolerance is 1.
    detail = re.fullmatch(
        r"signal_date: lies (\d+) days after today; at most 1 allowed", headers["hub-detail"]
    )
    assert detail is not None and int(detail[1]) in {39, 40}, headers["hub-detail"]
    # The day within the tolerance is published; the one beyond it is not.
    assert published_ids(hub, partner_id, 1) == [tomorrow["partner_event_id"]]
    expected = {
        "offered": 2,
        "accepted": 1,
        "rejected": 1,
        "deadlettered": 1,
    }
    assert moved(hub, before, "WATER", "future-date", expected) == expected
    assert ids_of(published(hub, "debt-signal", partner_id)) == [tomorrow["partner_event_id"]]


def test_an_intake_record_reusing_an_id_for_other_content_gets_a_conflict_letter(
    hub: Hub,
) -> None:
    partner_id = partner_id_of("DUO")
    register(hub, partner_id, "DUO", "debt-signal")
    first = signal()
    before = kafka_counts(hub, "DUO", "conflict")
    send(hub, [(intake_record(first), partner_id)])
    published_ids(hub, partner_id, 1)

    other = {**signal(amount_eur=1234), "partner_event_id": first["partner_event_id"]}
    value = intake_record(other)
    (source,) = send(hub, [(value, partner_id)])
    headers = assert_dead_lettered_unchanged(
        raw_letter(hub, source), value, None, partner_id, source, "conflict"
    )
    assert headers["hub-detail"] == (
        "partner_event_id: already used before for an event with other content; "
        "give a new event its own partner_event_id"
    )
    expected = {
        "offered": 2,
        "accepted": 1,
        "rejected": 1,
        "deadlettered": 1,
    }
    assert moved(hub, before, "DUO", "conflict", expected) == expected
    # Only the first content is on the source topic, once.
    (event,) = published(hub, "debt-signal", partner_id)
    assert (event["partner_event_id"], event["amount_eur"]) == (first["partner_event_id"], 850)


def strangers_letters(
    hub: Hub, n: int, partner_type: str = "BELASTINGDIENST"
) -> tuple[str, list[dict[str, Any]], list[bytes], list[dict[str, Any]]]:
    """A partner not registered yet sends n valid records; returns its id, the events, the
    records and their unknown-partner letters as `list` shows them (in the order sent), with
    the cause fixed: the partner registered."""
    partner_id = partner_id_of(partner_type)
    events = [signal() for _ in range(n)]
    values = [intake_record(event) for event in events]
    sources = send(hub, [(value, partner_id) for value in values])
    shown = listed(hub, partner_id, n)
    assert {d["reason"] for d in shown.values()} == {"unknown-partner"}
    register(hub, partner_id, partner_type, "debt-signal")
    return partner_id, events, values, [shown[source] for source in sources]


def where(record: ConsumerRecord[bytes, bytes]) -> Source:
    return (record.topic, record.partition, record.offset)


def replayed_at(hub: Hub, partner_id: str) -> dict[str, str | None]:
    """Each of the partner's letters by name: when it was replayed, None if never."""
    return {name(d): d["replayed_at"] for d in letters(hub, "--partner", partner_id)}


def test_a_dry_run_shows_the_letters_it_would_replay_and_sends_nothing(hub: Hub) -> None:
    partner_id, events, values, shown = strangers_letters(hub, 2)
    names = sorted(name(d) for d in shown)

    assert replay(hub, "--partner", partner_id, "--dry-run") == {"replayed": 0, "selected": names}
    table = hub.cli(
        "deadletter", "replay", "--partner", partner_id, "--dry-run", env={"COLUMNS": "400"}
    )
    assert table.returncode == 0
    assert all(n in table.stdout for n in names), table.stdout
    # Sent nothing (a replay has written when it returns) and marked nothing replayed.
    assert [times_on_intake(hub, v) for v in values] == [1, 1]
    assert list(replayed_at(hub, partner_id).values()) == [None, None]

    # The same command for real sends them: the dry run held back what was ready to go.
    assert replay(hub, "--partner", partner_id) == {"replayed": 2, "selected": names}
    assert [times_on_intake(hub, v) for v in values] == [2, 2]
    assert published_ids(hub, partner_id, 2) == ids_of(events)


def test_replaying_one_letter_sends_that_letter_only(hub: Hub) -> None:
    partner_id, events, values, (chosen, other) = strangers_letters(hub, 2)

    assert replay(hub, "--letter", name(chosen)) == {"replayed": 1, "selected": [name(chosen)]}
    assert [times_on_intake(hub, v) for v in values] == [2, 1]
    assert published_ids(hub, partner_id, 1) == [events[0]["partner_event_id"]]
    marked = replayed_at(hub, partner_id)
    assert marked[name(chosen)] is not None and marked[name(other)] is None

    # Sent back as it came: key, value, the partner's header and the record's correlation id,
    # without the dead-letter headers.
    topic = intake_topic(hub.stack.hub_settings, EventType.DEBT_SIGNAL)
    sent = (chosen["source_topic"], chosen["source_partition"], chosen["source_offset"])
    copies = [r for r in records_of(hub, topic) if r.value == values[0]]
    (original,) = [r for r in copies if where(r) == sent]
    (again,) = [r for r in copies if where(r) != sent]
    letter = raw_letter(hub, sent)
    assert list(again.headers) == [(k, v) for k, v in letter.headers if k not in DEADLETTER_HEADERS]
    assert {k for k, _ in again.headers} == {"hub-partner", "hub-correlation-id"}
    assert again.key == original.key


def test_replaying_by_reason_leaves_the_letters_of_other_reasons(hub: Hub) -> None:
    partner_id, events, values, (unknown,) = strangers_letters(hub, 1, "CAK_EIGEN_BIJDRAGE")
    # Now registered, the partner sends two records that are refused for other reasons.
    bad_postcode, with_bsn = signal(), signal()
    bad_postcode["address"]["postcode"] = "0000 XX"
    with_bsn["resident"]["bsn"] = "111222333"
    refused = [intake_record(bad_postcode), intake_record(with_bsn)]
    send(hub, [(value, partner_id) for value in refused])
    shown = listed(hub, partner_id, 3)
    by_reason = {d["reason"]: name(d) for d in shown.values()}
    assert set(by_reason) == {"unknown-partner", "invalid", "bsn-not-allowed"}

    chosen = replay(hub, "--partner", partner_id, "--reason", "unknown-partner")
    assert chosen == {"replayed": 1, "selected": [name(unknown)]}
    assert [times_on_intake(hub, v) for v in [*values, *refused]] == [2, 1, 1]
    assert published_ids(hub, partner_id, 1) == ids_of(events)

    # Two reasons at once; their causes are not fixed, so each fails again: a new letter at
    # a new offset, not replayed yet, while the old one is marked replayed.
    both = replay(
        hub, "--partner", partner_id, "--reason", "invalid", "--reason", "bsn-not-allowed"
    )
    assert both["replayed"] == 2
    assert sorted(both["selected"]) == sorted([by_reason["invalid"], by_reason["bsn-not-allowed"]])
    assert [times_on_intake(hub, v) for v in refused] == [2, 2]
    after = listed(hub, partner_id, 5)
    new = [d for d in after.values() if name(d) not in {name(x) for x in shown.values()}]
    assert sorted(d["reason"] for d in new) == ["bsn-not-allowed", "invalid"]
    assert all(d["replayed_at"] is None for d in new)
    assert all(after[source]["replayed_at"] is not None for source in shown)
    assert published_ids(hub, partner_id, 1) == ids_of(events)


def test_a_replayed_letter_is_sent_again_only_when_asked_with_again(hub: Hub) -> None:
    partner_id, events, (value,), (letter,) = strangers_letters(hub, 1, "CAK_ZORGVERZEKERINGEN")
    assert replay(hub, "--letter", name(letter)) == {"replayed": 1, "selected": [name(letter)]}
    assert published_ids(hub, partner_id, 1) == ids_of(events)
    first = replayed_at(hub, partner_id)[name(letter)]
    assert first is not None

    assert replay(hub, "--letter", name(letter)) == {"replayed": 0, "selected": []}
    assert replay(hub, "--partner", partner_id) == {"replayed": 0, "selected": []}
    assert times_on_intake(hub, value) == 2

    # Its receipt is marked published, so the copy sent again is a repeat.
    wait_for(
        lambda: hub.query(
            "select published_at from ingest_receipts where partner_id = :p", p=partner_id
        )[0][0],
        "the replayed event's receipt to be marked published",
    )

    def repeats() -> float:
        return service_metric(
            hub,
            "ingest",
            "hub_ingest_events_duplicate_total",
            event_type="debt-signal",
            channel="kafka",
        )

    repeats_before = repeats()
    again = replay(hub, "--letter", name(letter), "--again")
    assert again == {"replayed": 1, "selected": [name(letter)]}
    assert times_on_intake(hub, value) == 3
    wait_for(lambda: repeats() == repeats_before + 1, "ingest to answer the copy as a repeat")
    assert ids_of(published(hub, "debt-signal", partner_id)) == ids_of(events)
    latest = replayed_at(hub, partner_id)[name(letter)]
    assert latest is not None
    assert dt.datetime.fromisoformat(latest) > dt.datetime.fromisoformat(first)


@pytest.fixture(scope="module")
def hub_alone(
    kafka_bootstrap: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hub]:
    """A hub of its own: `--all` replays every letter on its topics, and only this test's."""
    workdir = tmp_path_factory.mktemp("deadletter")
    with (
        start_stack(kafka_bootstrap, database_url, workdir) as stack,
        httpx.Client(timeout=30) as client,
    ):
        yield Hub(stack, client)


def test_replay_all_sends_every_letter_not_replayed_yet_and_nothing_without_a_choice(
    hub_alone: Hub,
) -> None:
    hub = hub_alone
    first_id, first_events, first_values, (done, waiting) = strangers_letters(hub, 2)
    second_id, second_events, (second_value,), (second,) = strangers_letters(hub, 1)
    # A record the matcher refuses: a letter on the other dead-letter topic.
    source = source_topic(hub.stack.hub_settings, EventType.WVGGZ_REPORT)
    garbage = f"not avro {uuid.uuid4()}".encode()
    asyncio.run(produce_to(hub, source, garbage))
    matcher_letters = wait_for(
        lambda: [d for d in letters(hub) if d["source_topic"] == source],
        "the matcher's dead letter",
    )
    assert [d["reason"] for d in matcher_letters] == ["undecodable"]
    assert replay(hub, "--letter", name(done))["replayed"] == 1

    unchosen = hub.cli("deadletter", "replay")
    assert unchosen.returncode == 2
    assert [times_on_intake(hub, v) for v in [*first_values, second_value]] == [2, 1, 1]

    everything = replay(hub, "--all")
    expected = [name(waiting), name(second), name(matcher_letters[0])]
    assert (everything["replayed"], sorted(everything["selected"])) == (3, sorted(expected))
    assert [times_on_intake(hub, v) for v in [*first_values, second_value]] == [2, 2, 2]
    assert sum(r.value == garbage for r in records_of(hub, source)) == 2
    assert published_ids(hub, first_id, 2) == ids_of(first_events)
    assert published_ids(hub, second_id, 1) == ids_of(second_events)
    marked = {name(d): d["replayed_at"] for d in letters(hub)}
    assert all(marked[n] is not None for n in [name(done), *expected])
