"""The one way an event gets in: the partner's role, idempotency, the encrypted contact
details, then the source topic. The HTTP API, batches, CSV uploads and Kafka intake all
admit their events here, so each way in is checked and counted the same.

Order of work for a group of events from one partner:

1. each event is checked against what the partner may send (type, BSN) and the date
   tolerance; a refused event is answered and goes no further;
2. one transaction records a receipt per (partner, partner_event_id) and stores the new
   events' contact details, encrypted;
3. the new events are published; then their receipts are marked published.

A repeat of an accepted event is answered as accepted and not published again, unless its
first publication never completed (a crash between 2 and 3): then it is published now.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.contextvars import bound_contextvars

from services.ingest import metrics
from services.ingest.models import PartnerEvent
from services.ingest.records import build_record, contact_details
from services.ingest.registry import RegisteredPartner
from services.ingest.settings import IngestSettings
from services.shared.avro import AvroCodec
from services.shared.correlation import Trace
from services.shared.crypto import Vault
from services.shared.db.contacts import NewContact, store_contacts
from services.shared.db.models import IngestReceipt
from services.shared.events import FAMILIES, EventType
from services.shared.identity import Pseudonymiser
from services.shared.logging import get_logger
from services.shared.region import AMSTERDAM
from services.shared.topics import source_topic

log = get_logger("hub.ingest.intake")

#: How an event reached the hub; a label of the ingest metrics.
Channel = Literal["http", "batch", "upload", "kafka"]


def count_offered(
    event_type: EventType, partner: RegisteredPartner, channel: Channel, n: int = 1
) -> None:
    """Counts events offered by an authenticated partner (see services.ingest.metrics)."""
    if n:
        metrics.EVENTS_OFFERED.labels(event_type.value, partner.partner_type, channel).inc(n)


def count_invalid(
    event_type: EventType, partner: RegisteredPartner, channel: Channel, n: int = 1
) -> None:
    """Events offered and refused before `Intake.admit` (they failed validation)."""
    if n:
        count_offered(event_type, partner, channel, n)
        metrics.EVENTS_REJECTED.labels(event_type.value, "invalid", channel).inc(n)


@dataclass(frozen=True)
class Problem:
    """One fault of one event: the field path and what is wrong, never the field's value."""

    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True)
class Accepted:
    event_id: str
    #: The event was accepted before; this answer repeats that one and nothing was published.
    duplicate: bool = False


@dataclass(frozen=True)
class Refused:
    #: Why, as the `reason` label of `hub_ingest_events_rejected_total`.
    reason: str
    problems: tuple[Problem, ...]


Outcome = Accepted | Refused


def refused(reason: str, field: str, message: str) -> Refused:
    return Refused(reason, (Problem(field, message),))


def content_digest(event_type: EventType, event: PartnerEvent) -> bytes:
    """SHA-256 of the event as validated: tells a repeat from another event under its id.

    Fields left at their defaults are left out, so an optional field added to a model later
    (as `missed_payments` in debt-signal v2) does not make the repeat of an event received
    before it a conflict."""
    return _digest(event_type, event.model_dump(mode="json", exclude_defaults=True))


def legacy_content_digest(event_type: EventType, event: PartnerEvent) -> bytes:
    """The digest receipts stored before defaults were left out (every field, defaults too):
    a repeat of an event received then still matches its receipt."""
    return _digest(event_type, event.model_dump(mode="json"))


def _digest(event_type: EventType, dumped: dict[str, Any]) -> bytes:
    canonical = json.dumps([event_type.value, dumped], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


@dataclass
class _Candidate:
    index: int
    event: PartnerEvent
    record: dict[str, Any]
    digest: bytes
    correlation_id: str


class Intake:
    """Admits groups of validated events from one partner; see the module docstring."""

    def __init__(
        self,
        settings: IngestSettings,
        codec: AvroCodec,
        pseudonyms: Pseudonymiser,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        producer: AIOKafkaProducer,
    ) -> None:
        self._settings = settings
        self._codec = codec
        self._pseudonyms = pseudonyms
        self._sessions = sessions
        self._vault = vault
        self._producer = producer

    @property
    def producer(self) -> AIOKafkaProducer:
        return self._producer

    def check(
        self, event_type: EventType, event: PartnerEvent, partner: RegisteredPartner
    ) -> Refused | None:
        """What the partner's role and the date tolerance refuse, before anything is stored."""
        if event_type not in partner.event_types:
            return refused(
                "forbidden-type", "event_type", f"partner may not publish {event_type.value} events"
            )
        if event.resident.bsn is not None and not partner.may_send_bsn:
            return refused("bsn-not-allowed", "resident.bsn", "this partner may not send a BSN")
        family = FAMILIES[event_type]
        day: dt.date = getattr(event, family.time_field)
        ahead = (day - dt.datetime.now(AMSTERDAM).date()).days
        tolerance = self._settings.future_tolerance_days
        if ahead > tolerance:
            return refused(
                "future-date",
                family.time_field,
                f"lies {ahead} days after today; at most {tolerance} allowed",
            )
        return None

    async def admit(
        self,
        event_type: EventType,
        partner: RegisteredPartner,
        events: Sequence[PartnerEvent],
        channel: Channel,
        correlation: str | Sequence[str],
    ) -> list[Outcome]:
        """One outcome per event, in order. Raises only when Kafka or PostgreSQL fails; then
        whatever was not published is published by the partner's retry, and nothing is
        counted: the events are counted (offered with their outcome) only once their outcome
        is stored, so a retry counts them once and offered = accepted + duplicate + rejected.

        `correlation` is the correlation id of every event, or one per event (Kafka intake);
        it goes on each published record with the time of acceptance (services.shared.
        correlation)."""
        ids = [correlation] * len(events) if isinstance(correlation, str) else list(correlation)
        assert len(ids) == len(events), "one correlation id per event"
        outcomes: list[Outcome | None] = [None] * len(events)
        candidates: dict[str, _Candidate] = {}
        repeats: list[tuple[int, _Candidate]] = []
        received_at = dt.datetime.now(dt.UTC)
        for index, event in enumerate(events):
            problem = self.check(event_type, event, partner)
            if problem is not None:
                outcomes[index] = problem
                continue
            digest = content_digest(event_type, event)
            first = candidates.get(event.partner_event_id)
            if first is not None:
                # The same id twice in one group: a repeat of the first, or a conflict.
                if first.digest == digest:
                    repeats.append((index, first))
                else:
                    outcomes[index] = _conflict(within_request=channel in ("http", "batch"))
                continue
            record = build_record(
                event, partner.partner_id, partner.partner_type, self._pseudonyms, received_at
            )
            candidates[event.partner_event_id] = _Candidate(
                index, event, record, digest, ids[index]
            )

        to_publish = await self._record(event_type, partner, candidates, outcomes)
        if to_publish:
            await self._publish(event_type, partner, to_publish)
        for candidate in to_publish:
            outcomes[candidate.index] = Accepted(candidate.record["event_id"])
        for index, first in repeats:
            answer = outcomes[first.index]
            outcomes[index] = (
                Accepted(answer.event_id, duplicate=True)
                if isinstance(answer, Accepted)
                else answer
            )

        done = [o for o in outcomes if o is not None]
        assert len(done) == len(events), "every event gets an outcome"
        count_offered(event_type, partner, channel, len(events))
        for outcome in done:
            if isinstance(outcome, Refused):
                metrics.EVENTS_REJECTED.labels(event_type.value, outcome.reason, channel).inc()
            elif outcome.duplicate:
                metrics.EVENTS_DUPLICATE.labels(event_type.value, channel).inc()
        accepted = len(to_publish)
        if accepted:
            metrics.EVENTS_ACCEPTED.labels(event_type.value, partner.partner_type, channel).inc(
                accepted
            )
        _log_admitted(event_type, channel, ids, done)
        return done

    async def _record(
        self,
        event_type: EventType,
        partner: RegisteredPartner,
        candidates: dict[str, _Candidate],
        outcomes: list[Outcome | None],
    ) -> list[_Candidate]:
        """Takes the receipts and stores the new events' details; returns what to publish."""
        if not candidates:
            return []
        family = FAMILIES[event_type]
        async with self._sessions() as session, session.begin():
            inserted = await session.execute(
                insert(IngestReceipt)
                .on_conflict_do_nothing()
                .returning(IngestReceipt.partner_event_id),
                [
                    {
                        "partner_id": partner.partner_id,
                        "partner_event_id": pid,
                        "event_type": event_type.value,
                        "event_id": c.record["event_id"],
                        "content_sha256": c.digest,
                    }
                    for pid, c in candidates.items()
                ],
            )
            taken = set(inserted.scalars().all())
            earlier = {
                r.partner_event_id: r
                for r in await session.scalars(
                    select(IngestReceipt).where(
                        IngestReceipt.partner_id == partner.partner_id,
                        IngestReceipt.partner_event_id.in_(
                            [p for p in candidates if p not in taken]
                        ),
                    )
                )
            }
            to_publish = []
            for pid, candidate in candidates.items():
                receipt = earlier.get(pid)
                if receipt is None:
                    to_publish.append(candidate)
                elif receipt.content_sha256 not in (
                    candidate.digest,
                    legacy_content_digest(event_type, candidate.event),
                ):
                    outcomes[candidate.index] = _conflict(within_request=False)
                elif receipt.published_at is None:
                    to_publish.append(candidate)  # its first publication never completed
                else:
                    outcomes[candidate.index] = Accepted(receipt.event_id, duplicate=True)
            await store_contacts(
                session,
                self._vault,
                [
                    NewContact(
                        household_id=c.record["household_id"],
                        event_id=c.record["event_id"],
                        event_type=event_type.value,
                        domain=family.domain.value,
                        event_date=c.record[family.time_field],
                        details=contact_details(c.event),
                    )
                    for c in to_publish
                    if c.event.partner_event_id in taken
                ],
            )
        return to_publish

    async def _publish(
        self, event_type: EventType, partner: RegisteredPartner, candidates: list[_Candidate]
    ) -> None:
        topic = source_topic(self._settings, event_type)
        schema = FAMILIES[event_type].schema_name
        accepted_at = time.time()
        sent = [
            await self._producer.send(
                topic,
                self._codec.encode(schema, c.record),
                key=c.record["household_id"].encode(),
                headers=Trace(c.correlation_id, accepted_at).headers(),
            )
            for c in candidates
        ]
        for delivery in sent:
            await delivery
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(IngestReceipt)
                .where(
                    IngestReceipt.partner_id == partner.partner_id,
                    IngestReceipt.partner_event_id.in_(
                        [c.event.partner_event_id for c in candidates]
                    ),
                )
                .values(published_at=dt.datetime.now(dt.UTC))
            )


def _log_admitted(
    event_type: EventType, channel: Channel, ids: list[str], outcomes: list[Outcome]
) -> None:
    """One line per correlation id (a request, an upload chunk, an intake record)."""
    counts: dict[str, Counter[str]] = {}
    for cid, outcome in zip(ids, outcomes, strict=True):
        state = (
            "rejected"
            if isinstance(outcome, Refused)
            else "duplicate"
            if outcome.duplicate
            else "accepted"
        )
        counts.setdefault(cid, Counter())[state] += 1
    for cid, count in counts.items():
        with bound_contextvars(correlation_id=cid):
            log.info(
                "events.admitted",
                event_type=event_type.value,
                channel=channel,
                accepted=count["accepted"],
                duplicate=count["duplicate"],
                rejected=count["rejected"],
            )


def _conflict(*, within_request: bool) -> Refused:
    """`within_request`: the first use is in the same request. A file is read in chunks and
    intake records come one at a time from their producer, whichever chunk or poll holds
    both: for them the first use came before."""
    when = "earlier in this request" if within_request else "before"
    return refused(
        "conflict",
        "partner_event_id",
        f"already used {when} for an event with other content; "
        "give a new event its own partner_event_id",
    )
