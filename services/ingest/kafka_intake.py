"""Direct Kafka intake: trusted partner producers write Avro (`schemas/intake/`) with identity
in clear to `<prefix>.intake.<type>.v1`, the partner id in the header `hub-partner`.

Each record is decoded, checked against the partner registry and the HTTP model, and
admitted through the same `Intake` as an HTTP event. A record that fails goes unchanged to
the intake dead-letter topic, its reason in the headers (`hub-reason`, `hub-detail`,
`hub-source-topic`, `hub-source-partition`, `hub-source-offset`) and its correlation id in
`hub-correlation-id` (a new one in place of a missing or invalid one), and the stream goes on.
Offsets are committed after a batch is admitted or dead-lettered, so a crash re-reads the
batch; the repeats are recognised by their partner_event_id and not published twice.

When Kafka or PostgreSQL fails, the step that failed is retried (a partner's lookup, one
partner's admission, one dead letter), not the whole batch: a retried batch would answer its
events published by the first attempt as duplicates and send and count their letters again.
Each step counts what it did once it succeeded: `Intake.admit` its events, a dead letter
once it is on the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import stamina
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, KafkaTimeoutError
from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.contextvars import bound_contextvars

from services.ingest import metrics
from services.ingest.intake import (
    Intake,
    Outcome,
    Problem,
    Refused,
    count_invalid,
    count_offered,
)
from services.ingest.models import MODELS, PartnerEvent
from services.ingest.registry import PARTNER_ID_PATTERN, RegisteredPartner, active_partner
from services.ingest.settings import IngestSettings
from services.ingest.uploads import problems_of
from services.shared.avro import AvroCodec
from services.shared.correlation import CORRELATION_HEADER, correlation_id_or_new
from services.shared.errors import DecodeError
from services.shared.events import FAMILIES, EventType
from services.shared.logging import get_logger
from services.shared.topics import (
    DEADLETTER_HEADERS,
    deadletter_headers,
    intake_deadletter_topic,
    intake_topic,
)

log = get_logger("hub.ingest.kafka")
PARTNER_HEADER = "hub-partner"
_PARTNER_ID = re.compile(PARTNER_ID_PATTERN)


def _transient(exc: Exception) -> bool:
    """Kafka or PostgreSQL away, restarting or overloaded, which passes; not a statement
    PostgreSQL refuses (a constraint, a value it cannot store) nor a record Kafka refuses
    (too large), which fail again on every try."""
    if isinstance(exc, DBAPIError):
        # asyncpg's own errors (the server starting or shutting down, too many connections,
        # a deadlock) reach SQLAlchemy as a plain DBAPIError: all but these pass.
        return not isinstance(exc, IntegrityError | DataError | ProgrammingError)
    if isinstance(exc, KafkaError):
        return exc.retriable or isinstance(exc, KafkaTimeoutError)
    return isinstance(exc, OSError)


#: Kafka or PostgreSQL away for a while: each step waits for them, up to two minutes.
_retried = stamina.retry(on=_transient, attempts=10, timeout=120)
#: The intake record each topic takes: the source schema's name in the intake namespace.
_INTAKE_SCHEMA = {
    t: f"nl.twente.hub.intake.{FAMILIES[t].schema_name.rsplit('.', 1)[1]}Intake" for t in EventType
}


@dataclass(frozen=True)
class _Letter:
    record: ConsumerRecord[bytes, bytes]
    reason: str
    detail: str
    correlation_id: str


class KafkaIntake:
    """Consumes the intake topics in the background while ingest runs."""

    def __init__(
        self,
        settings: IngestSettings,
        intake: Intake,
        sessions: async_sessionmaker[AsyncSession],
        producer: AIOKafkaProducer,
    ) -> None:
        self._settings = settings
        self._intake = intake
        self._sessions = sessions
        self._producer = producer
        self._codec = AvroCodec(settings.schemas_dir / "intake")
        self._types = {intake_topic(settings, t): t for t in EventType}
        self._consumer = AIOKafkaConsumer(
            *self._types,
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=settings.ingest_intake_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        self._task.add_done_callback(_crash_loudly)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(
                timeout_ms=500, max_records=self._settings.ingest_upload_chunk_rows
            )
            for partition, records in batches.items():
                await self._handle(self._types[partition.topic], records)
                try:
                    await self._consumer.commit({partition: records[-1].offset + 1})
                except (CommitFailedError, IllegalStateError) as exc:
                    # The group rebalanced meanwhile (a replica came or went, or the steps
                    # above waited out the poll interval) and the partition is no longer
                    # ours: its new owner reads these records again and their receipts
                    # answer them as repeats.
                    log.warning(
                        "intake.commit_failed",
                        topic=partition.topic,
                        partition=partition.partition,
                        error=str(exc)[:200],
                    )

    async def _handle(
        self, event_type: EventType, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        letters: list[_Letter] = []
        groups: dict[str, list[tuple[ConsumerRecord[bytes, bytes], str, PartnerEvent]]] = (
            defaultdict(list)
        )
        partners: dict[str, RegisteredPartner | None] = {}
        model = MODELS[event_type]
        for record in records:
            headers = dict(record.headers)
            # The producer's own id when it gave a valid one; else one of ours per record.
            cid = correlation_id_or_new(headers.get(CORRELATION_HEADER))
            partner_id = _partner_of(headers)
            if partner_id not in partners:
                partners[partner_id] = await self._partner(partner_id)
            if partners[partner_id] is None:
                # No event offered: nobody we know offered it (services.ingest.metrics).
                letters.append(
                    _Letter(
                        record,
                        "unknown-partner",
                        f"header {PARTNER_HEADER}: no active partner",
                        cid,
                    )
                )
                continue
            try:
                name, data = self._codec.decode(record.value or b"")
                if name != _INTAKE_SCHEMA[event_type]:
                    raise DecodeError(f"{name} does not belong on this topic")
                groups[partner_id].append((record, cid, model.model_validate(data)))
            except DecodeError as exc:
                letters.append(_Letter(record, "undecodable", str(exc), cid))
            except ValidationError as exc:
                letters.append(_Letter(record, "invalid", _detail(problems_of(exc)), cid))
        for partner_id, admitted in groups.items():
            partner = partners[partner_id]
            assert partner is not None
            outcomes = await self._admit(
                event_type,
                partner,
                [event for _, _, event in admitted],
                [cid for _, cid, _ in admitted],
            )
            letters.extend(
                _Letter(record, outcome.reason, _detail(outcome.problems), cid)
                for (record, cid, _), outcome in zip(admitted, outcomes, strict=True)
                if isinstance(outcome, Refused)
            )
        for letter in letters:
            await self._dead_letter(letter)
            # Refused before admission: admit counted the others as offered and rejected.
            known = partners.get(_partner_of(dict(letter.record.headers)))
            if letter.reason == "undecodable" and known is not None:
                count_offered(event_type, known, "kafka")
                metrics.EVENTS_REJECTED.labels(event_type.value, "undecodable", "kafka").inc()
            elif letter.reason == "invalid" and known is not None:
                count_invalid(event_type, known, "kafka")

    @_retried
    async def _partner(self, partner_id: str) -> RegisteredPartner | None:
        if not _PARTNER_ID.fullmatch(partner_id):
            return None
        async with self._sessions() as session:
            return await active_partner(session, partner_id)

    @_retried
    async def _admit(
        self,
        event_type: EventType,
        partner: RegisteredPartner,
        events: list[PartnerEvent],
        correlation_ids: list[str],
    ) -> list[Outcome]:
        # A failed admission counted nothing; what it published is published again and
        # counted once now (its receipts were not yet marked published).
        return await self._intake.admit(event_type, partner, events, "kafka", correlation_ids)

    @_retried
    async def _dead_letter(self, letter: _Letter) -> None:
        """Sends the letter, then counts and logs it: a failed send counts nothing."""
        record = letter.record
        # The letter carries the record's correlation id, ours when it had no valid one, so
        # the id of the log line finds it; a replay keeps it (it strips DEADLETTER_HEADERS).
        kept = [
            (k, v)
            for k, v in record.headers
            if k not in DEADLETTER_HEADERS and k != CORRELATION_HEADER
        ]
        await self._producer.send_and_wait(
            intake_deadletter_topic(self._settings),
            record.value,
            key=record.key,
            headers=[
                *kept,
                (CORRELATION_HEADER, letter.correlation_id.encode()),
                *deadletter_headers(
                    letter.reason, letter.detail, record.topic, record.partition, record.offset
                ),
            ],
        )
        metrics.DEADLETTERED.labels(letter.reason).inc()
        with bound_contextvars(correlation_id=letter.correlation_id):
            log.warning(
                "intake.deadlettered",
                reason=letter.reason,
                detail=letter.detail,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )


def _partner_of(headers: Mapping[str, bytes | None]) -> str:
    """The partner id the record's header gives, "" when it has none or none readable."""
    value = headers.get(PARTNER_HEADER)
    return "" if value is None else value.decode(errors="replace")


def _detail(problems: tuple[Problem, ...] | list[Problem]) -> str:
    return "; ".join(f"{p.field}: {p.message}" for p in problems)[:1000]


def _crash_loudly(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("intake.consumer_died", error=repr(task.exception()))
