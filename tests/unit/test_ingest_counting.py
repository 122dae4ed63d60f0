"""Ingest counts an event once, with its outcome: an admission that fails (Kafka or PostgreSQL
away) counts nothing, so the partner's retry or the Kafka intake's retry counts it once and
offered = accepted + duplicate + rejected holds per channel. No Kafka or PostgreSQL here:
their failures are stand-ins. And an id given twice in one group is a conflict worded for its
way in."""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, cast

import pytest
import stamina
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaConnectionError
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy.exc import OperationalError

from services.ingest import metrics
from services.ingest.intake import Accepted, Intake, Outcome, Refused
from services.ingest.kafka_intake import PARTNER_HEADER, KafkaIntake
from services.ingest.models import MODELS, PartnerEvent
from services.ingest.registry import RegisteredPartner
from services.ingest.settings import IngestSettings
from services.shared.avro import AvroCodec
from services.shared.crypto import Vault
from services.shared.events import EventType
from services.shared.identity import Pseudonymiser
from services.shared.topics import intake_topic

DEBT = EventType.DEBT_SIGNAL
PARTNER = RegisteredPartner("energie-07", "ENERGIE", frozenset({DEBT}), may_send_bsn=False)
KINDS = ("offered", "accepted", "duplicate", "rejected")


@pytest.fixture(autouse=True)
def one_attempt() -> Iterator[None]:
    """Every series exists; stamina retries once, without waiting."""
    metrics.initialise({"ENERGIE": frozenset({DEBT})})
    with stamina.set_testing(True, attempts=2):
        yield


def settings() -> IngestSettings:
    return IngestSettings(
        pseudonym_secret=SecretStr("s" * 32),
        master_key=SecretStr(base64.b64encode(os.urandom(32)).decode()),
    )


def counts(channel: str) -> dict[str, float]:
    """Ingest's offered, accepted, duplicate and rejected events of one channel."""
    found = dict.fromkeys(KINDS, 0.0)
    for family in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode()):
        kind = family.name.removeprefix("hub_ingest_events_")
        for sample in family.samples:
            ours = sample.name.endswith("_total") and sample.labels.get("channel") == channel
            if kind in found and ours:
                found[kind] += sample.value
    return found


def deadlettered(reason: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "hub_ingest_intake_deadlettered_total", {"reason": reason}
    )
    return value or 0.0


def event(**extra: Any) -> PartnerEvent:
    return MODELS[DEBT].model_validate(
        {
            "partner_event_id": f"e-{os.urandom(4).hex()}",
            "resident": {"name": "Canary Testpersoon", "birth_date": "1970-01-01"},
            "address": {
                "street": "Teststraat",
                "house_number": 1,
                "postcode": "7511 AB",
                "city": "Enschede",
            },
            "municipality_code": "GM0153",
            "wijk_code": "WK015301",
            "creditor_type": "ENERGIE",
            "creditor_name": "Energie 07",
            "amount_eur": 850,
            "arrear_start_date": "2025-01-01",
            "signal_date": (dt.date.today() - dt.timedelta(days=2)).isoformat(),
            **extra,
        }
    )


def database_down() -> Any:
    @asynccontextmanager
    async def session() -> Any:
        raise OperationalError("select 1", {}, ConnectionRefusedError())
        yield  # pragma: no cover

    return session


class KafkaDown:
    """A producer whose broker does not answer."""

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        raise KafkaConnectionError("no broker")

    async def send_and_wait(self, *args: Any, **kwargs: Any) -> Any:
        raise KafkaConnectionError("no broker")


def intake(sessions: Any, producer: Any) -> Intake:
    s = settings()
    return Intake(
        s,
        AvroCodec(s.schemas_dir),
        Pseudonymiser(s),
        sessions,
        Vault(s),
        cast(AIOKafkaProducer, producer),
    )


async def test_an_admission_that_fails_on_postgresql_counts_nothing() -> None:
    before = counts("http")
    with pytest.raises(OperationalError):
        await intake(database_down(), KafkaDown()).admit(DEBT, PARTNER, [event()], "http", "c1")
    assert counts("http") == before


async def test_an_admission_that_fails_on_kafka_counts_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failing = intake(database_down(), KafkaDown())

    async def stored(event_type: EventType, partner: Any, candidates: Any, outcomes: Any) -> Any:
        return list(candidates.values())  # the receipts taken: all events are new

    monkeypatch.setattr(failing, "_record", stored)
    before = counts("batch")
    with pytest.raises(KafkaConnectionError):
        await failing.admit(DEBT, PARTNER, [event(), event()], "batch", "c2")
    assert counts("batch") == before


async def test_an_event_refused_before_storage_is_offered_and_rejected_together() -> None:
    before = counts("http")
    # A BSN from a partner without the right: refused without PostgreSQL or Kafka.
    (outcome,) = await intake(database_down(), KafkaDown()).admit(
        DEBT,
        PARTNER,
        [event(resident={"name": "A", "birth_date": "1970-01-01", "bsn": "111222333"})],
        "http",
        "c3",
    )
    assert isinstance(outcome, Refused) and outcome.reason == "bsn-not-allowed"
    after = counts("http")
    assert {k: after[k] - before[k] for k in KINDS} == {
        "offered": 1,
        "accepted": 0,
        "duplicate": 0,
        "rejected": 1,
    }


class FlakyProducer:
    """Fails the first dead-letter send, then takes them; keeps what it took."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(self, topic: str, value: bytes, **kwargs: Any) -> None:
        if self.failures:
            self.failures -= 1
            raise KafkaConnectionError("broker gone for a moment")
        self.sent.append({"topic": topic, "value": value, **kwargs})


class CountingIntake:
    """Admits every event as new and remembers how often it was asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def admit(
        self,
        event_type: EventType,
        partner: RegisteredPartner,
        events: list[PartnerEvent],
        channel: str,
        correlation: list[str],
    ) -> list[Outcome]:
        self.calls += 1
        return [Accepted(f"id-{e.partner_event_id}") for e in events]


def known_partner() -> Any:
    row = SimpleNamespace(
        partner_id=PARTNER.partner_id,
        partner_type=PARTNER.partner_type,
        event_types=[DEBT.value],
        may_send_bsn=False,
        active=True,
    )

    class Session:
        async def get(self, model: Any, key: str) -> Any:
            return row if key == row.partner_id else None

    @asynccontextmanager
    async def session() -> Any:
        yield Session()

    return session


def record(value: bytes, offset: int, *headers: tuple[str, bytes]) -> Any:
    topic = intake_topic(settings(), DEBT)
    return ConsumerRecord(topic, 0, offset, 0, 0, None, value, None, 0, len(value), tuple(headers))


@asynccontextmanager
async def kafka_intake(admitted: Any, producer: Any) -> AsyncIterator[KafkaIntake]:
    """The Kafka intake of a known partner, never started: the tests hand it batches."""
    kafka = KafkaIntake(
        settings(), cast(Intake, admitted), known_partner(), cast(AIOKafkaProducer, producer)
    )
    try:
        yield kafka
    finally:
        await kafka.stop()


PARTNER_OF_RECORD = (PARTNER_HEADER, PARTNER.partner_id.encode())


async def test_a_kafka_batch_whose_dead_letter_fails_once_is_admitted_and_counted_once() -> None:
    codec = AvroCodec(settings().schemas_dir / "intake")
    valid = codec.encode("nl.twente.hub.intake.DebtSignalIntake", event().model_dump(mode="python"))
    producer, admitted = FlakyProducer(), CountingIntake()
    before, letters = counts("kafka"), deadlettered("undecodable")

    async with kafka_intake(admitted, producer) as kafka:
        await kafka._handle(
            DEBT, [record(valid, 0, PARTNER_OF_RECORD), record(b"not avro", 1, PARTNER_OF_RECORD)]
        )

    assert admitted.calls == 1  # not again: its event was published the first time
    assert len(producer.sent) == 1 and deadlettered("undecodable") == letters + 1
    after = counts("kafka")
    assert after["offered"] - before["offered"] == 1  # the undecodable one; admit counts its own
    assert after["rejected"] - before["rejected"] == 1


async def test_a_dead_letter_that_cannot_be_sent_is_not_counted() -> None:
    before, letters = counts("kafka"), deadlettered("undecodable")
    async with kafka_intake(CountingIntake(), FlakyProducer(failures=5)) as kafka:
        with pytest.raises(KafkaConnectionError):
            await kafka._handle(DEBT, [record(b"not avro", 0, PARTNER_OF_RECORD)])
    assert deadlettered("undecodable") == letters
    assert counts("kafka") == before


@pytest.mark.parametrize(
    ("channel", "when"),
    [("batch", "earlier in this request"), ("upload", "before"), ("kafka", "before")],
)
async def test_an_id_given_twice_in_one_group_is_a_conflict_worded_for_its_way_in(
    monkeypatch: pytest.MonkeyPatch, channel: Any, when: str
) -> None:
    """A batch is one request; a file's rows and a producer's records are not, whichever
    chunk or poll holds both."""
    staged = intake(database_down(), KafkaDown())

    async def stored(event_type: EventType, partner: Any, candidates: Any, outcomes: Any) -> Any:
        return list(candidates.values())  # the receipts taken: all events are new

    async def published(event_type: EventType, partner: Any, candidates: Any) -> None:
        return None

    monkeypatch.setattr(staged, "_record", stored)
    monkeypatch.setattr(staged, "_publish", published)
    first = event()
    other = event(partner_event_id=first.partner_event_id, amount_eur=999)
    accepted, conflict = await staged.admit(DEBT, PARTNER, [first, other], channel, "c9")
    assert isinstance(accepted, Accepted) and not accepted.duplicate
    assert isinstance(conflict, Refused) and conflict.reason == "conflict"
    (problem,) = conflict.problems
    assert problem.field == "partner_event_id"
    assert problem.message.startswith(f"already used {when} for an event with other content")
