"""`hub deadletter list|replay`: what the services refused from their topics, and sending it
back to where it came from once the cause is fixed.

Two dead-letter topics: `<prefix>.deadletter.v1` (matcher and notifier; pseudonyms only) and
`<prefix>.intake-deadletter.v1` (Kafka intake; identity in clear, like the intake topics).
Listing shows the headers only (reason, detail, source), never a record's value. A replay
sends the record unchanged, with its key and its original headers, to its source topic and
notes it in PostgreSQL, so a letter is replayed once unless asked again (`--again`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Annotated

import typer
from rich.table import Table

from services.cli.registries import JsonOption, err, out, refuse
from services.shared.logging import configure_logging

deadletter_app = typer.Typer(
    help="Dead letters: records the services refused, and their replay after a fix.",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class Letter:
    topic: str
    partition: int
    offset: int
    at: str
    reason: str
    detail: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    partner: str | None
    replayed_at: str | None

    @property
    def name(self) -> str:
        """How `list` shows the letter and `replay --letter` takes it: topic/partition@offset."""
        return f"{self.topic}/{self.partition}@{self.offset}"


ReasonOption = Annotated[
    list[str] | None, typer.Option("--reason", help="Only letters with this reason (repeat).")
]
PartnerOption = Annotated[
    str | None, typer.Option("--partner", help="Only intake letters of this partner id.")
]


async def _letters(reasons: list[str] | None, partner: str | None) -> list[Letter]:
    from sqlalchemy import select

    from services.shared.config import DatabaseSettings, HubSettings
    from services.shared.db.engine import make_engine, make_sessionmaker
    from services.shared.db.models import DeadletterReplay
    from services.shared.kafka import read_to_end
    from services.shared.topics import deadletter_topic, intake_deadletter_topic

    settings = HubSettings()
    topics = [deadletter_topic(settings), intake_deadletter_topic(settings)]
    engine = make_engine(DatabaseSettings())
    try:
        async with make_sessionmaker(engine)() as session:
            replayed = {
                (r.topic, r.partition, r.offset): r.replayed_at
                for r in await session.scalars(
                    select(DeadletterReplay).where(DeadletterReplay.topic.in_(topics))
                )
            }
    finally:
        await engine.dispose()
    letters = []
    async for record in read_to_end(settings.kafka_bootstrap, topics):
        headers = {k: (v or b"").decode(errors="replace") for k, v in record.headers}
        letter = Letter(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            at=dt.datetime.fromtimestamp(record.timestamp / 1000, dt.UTC).isoformat(),
            reason=headers.get("hub-reason", "unknown"),
            detail=headers.get("hub-detail", ""),
            source_topic=headers.get("hub-source-topic", ""),
            source_partition=_int(headers.get("hub-source-partition")),
            source_offset=_int(headers.get("hub-source-offset")),
            partner=headers.get("hub-partner"),
            replayed_at=(
                when.isoformat()
                if (when := replayed.get((record.topic, record.partition, record.offset)))
                else None
            ),
        )
        if reasons and letter.reason not in reasons:
            continue
        if partner is not None and letter.partner != partner:
            continue
        letters.append(letter)
    return letters


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _settings_and_logging() -> None:
    from services.shared.config import HubSettings

    hub = HubSettings()
    configure_logging(json=hub.log_json, level=hub.log_level)


@deadletter_app.command("list")
def list_letters(
    reason: ReasonOption = None,
    partner: PartnerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show dead letters: where from, why, and whether they were replayed (never the values)."""
    _settings_and_logging()
    letters = asyncio.run(_letters(reason, partner))
    if as_json:
        out.print_json(json.dumps([asdict(letter) for letter in letters]))
        return
    _show(letters)
    out.print(f"{len(letters)} dead letters")


def _show(letters: list[Letter]) -> None:
    table = Table("letter", "at", "reason", "detail", "source", "partner", "replayed")
    for letter in letters:
        table.add_row(
            letter.name,
            letter.at[:19],
            letter.reason,
            letter.detail,
            f"{letter.source_topic}/{letter.source_partition}@{letter.source_offset}",
            letter.partner or "",
            (letter.replayed_at or "")[:19],
        )
    out.print(table)


@deadletter_app.command()
def replay(
    reason: ReasonOption = None,
    partner: PartnerOption = None,
    letter: Annotated[
        list[str] | None,
        typer.Option(
            "--letter",
            help="Only this letter, as `list` shows it: topic/partition@offset (repeat).",
        ),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every letter not replayed yet.")] = False,
    again: Annotated[
        bool, typer.Option("--again", help="Also letters that were replayed before.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be replayed, send nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Send dead letters back to their source topic, unchanged, once their cause is fixed."""
    if not (reason or partner or letter or every):
        refuse("say which letters: --reason, --partner, --letter or --all")
    _settings_and_logging()
    chosen = [
        found
        for found in asyncio.run(_letters(reason, partner))
        if (not letter or found.name in letter)
        and (again or found.replayed_at is None)
        and found.source_topic
    ]
    if not dry_run and chosen:
        asyncio.run(_replay(chosen))
    summary = {
        "replayed": 0 if dry_run else len(chosen),
        "selected": [found.name for found in chosen],
    }
    if as_json:
        out.print_json(json.dumps(summary))
        return
    if dry_run:
        _show(chosen)
    err.print(f"{'would replay' if dry_run else 'replayed'} {len(chosen)} dead letters")


async def _replay(letters: list[Letter]) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from sqlalchemy.dialects.postgresql import insert

    from services.shared.config import DatabaseSettings, HubSettings
    from services.shared.db.engine import make_engine, make_sessionmaker
    from services.shared.db.models import DeadletterReplay
    from services.shared.kafka import make_producer
    from services.shared.topics import DEADLETTER_HEADERS

    settings = HubSettings()
    producer = make_producer(settings)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    engine = make_engine(DatabaseSettings())
    await producer.start()
    await consumer.start()
    try:
        for letter in letters:
            # The value is fetched again here, only for sending: it is never printed.
            tp = TopicPartition(letter.topic, letter.partition)
            consumer.assign([tp])
            consumer.seek(tp, letter.offset)
            fetched = await consumer.getmany(tp, timeout_ms=30_000, max_records=1)
            record = next(iter(fetched.get(tp, [])), None)
            if record is None or record.offset != letter.offset:
                # Listed a moment ago: Kafka's retention deleted it since, or Kafka is slow.
                refuse(
                    f"dead letter {letter.name} could not be read again (gone past the topic's "
                    "retention, or Kafka too slow); the letters before it were replayed, "
                    "it and those after it were not"
                )
            headers = [(k, v) for k, v in record.headers if k not in DEADLETTER_HEADERS]
            await producer.send_and_wait(
                letter.source_topic, record.value, key=record.key, headers=headers
            )
            async with make_sessionmaker(engine)() as session, session.begin():
                await session.execute(
                    insert(DeadletterReplay)
                    .values(topic=letter.topic, partition=letter.partition, offset=letter.offset)
                    .on_conflict_do_update(
                        index_elements=["topic", "partition", "offset"],
                        set_={"replayed_at": dt.datetime.now(dt.UTC)},
                    )
                )
    finally:
        await consumer.stop()
        await producer.stop()
        await engine.dispose()
