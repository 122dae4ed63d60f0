"""A batch whose publication Kafka breaks off halfway: its events keep their receipts, the
partner's retry publishes every one of them under the same event ids, and a repeat after
that publishes nothing. Real PostgreSQL and Kafka; only the producer's failure is staged."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from services.ingest.intake import Accepted, Intake, Outcome
from services.ingest.models import MODELS, PartnerEvent
from services.ingest.registry import RegisteredPartner
from services.ingest.settings import IngestSettings
from services.shared.avro import AvroCodec
from services.shared.crypto import Vault
from services.shared.db.engine import make_engine, make_sessionmaker
from services.shared.events import EventType
from services.shared.identity import Pseudonymiser
from services.shared.kafka import make_producer
from tests.integration.fixtures import Hub, add_partner, debt_signal, new_address, published

pytestmark = pytest.mark.integration

DEBT = EventType.DEBT_SIGNAL
EVENTS = 4
#: Records Kafka takes before it breaks off.
SENT_BEFORE_THE_BREAK = 2


class BreaksOff:
    """The real producer, until Kafka goes away after `n` records (for this admission)."""

    def __init__(self, producer: AIOKafkaProducer, n: int) -> None:
        self._producer = producer
        self._left = n

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        if self._left == 0:
            raise KafkaConnectionError("broker gone")
        self._left -= 1
        return await self._producer.send(*args, **kwargs)


async def admit(
    settings: IngestSettings,
    partner: RegisteredPartner,
    events: list[PartnerEvent],
    breaks_off_after: int | None = None,
) -> list[Outcome]:
    engine = make_engine(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        sender = producer if breaks_off_after is None else BreaksOff(producer, breaks_off_after)
        intake = Intake(
            settings,
            AvroCodec(settings.schemas_dir),
            Pseudonymiser(settings),
            make_sessionmaker(engine),
            Vault(settings),
            cast(AIOKafkaProducer, sender),
        )
        return await intake.admit(DEBT, partner, events, "batch", uuid.uuid4().hex)
    finally:
        await producer.stop()
        await engine.dispose()


def test_a_batch_broken_off_by_kafka_is_published_whole_by_its_retry(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in hub.stack.env().items():
        monkeypatch.setenv(name, value)
    settings = IngestSettings(ingest_kafka_intake=False)
    partner_id = f"energie-{uuid.uuid4().hex[:8]}"
    add_partner(hub, partner_id, "--type", "ENERGIE", "--event-type", "debt-signal")
    partner = RegisteredPartner(partner_id, "ENERGIE", frozenset({DEBT}), may_send_bsn=False)
    events = [
        MODELS[DEBT].model_validate(
            debt_signal(new_address(), "2025-11-03", creditor_type="ENERGIE")
        )
        for _ in range(EVENTS)
    ]

    with pytest.raises(KafkaConnectionError):
        asyncio.run(admit(settings, partner, events, breaks_off_after=SENT_BEFORE_THE_BREAK))
    # The receipts are taken, none marked published: the retry must publish them all.
    receipts = hub.query(
        "select event_id from ingest_receipts where partner_id = :p and published_at is null",
        p=partner_id,
    )
    assert len(receipts) == EVENTS
    before_retry = {r["event_id"] for r in published(hub, DEBT.value, partner_id)}
    assert len(before_retry) <= SENT_BEFORE_THE_BREAK

    retried = asyncio.run(admit(settings, partner, events))
    assert all(isinstance(o, Accepted) and not o.duplicate for o in retried), retried
    answered = {cast(Accepted, o).event_id for o in retried}
    assert answered == {r[0] for r in receipts}
    on_topic = published(hub, DEBT.value, partner_id)
    assert {r["event_id"] for r in on_topic} == answered
    # Each event once more than the records that went out before the break: at least once.
    assert len(on_topic) == EVENTS + len(before_retry)
    assert hub.query(
        "select count(*) from ingest_receipts where partner_id = :p and published_at is null",
        p=partner_id,
    ) == [(0,)]

    repeated = asyncio.run(admit(settings, partner, events))
    assert all(isinstance(o, Accepted) and o.duplicate for o in repeated), repeated
    assert len(published(hub, DEBT.value, partner_id)) == len(on_topic)
