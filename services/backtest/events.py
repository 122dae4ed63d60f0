"""Where back-testing reads history: an exported events file, or the hub's source topics.

The file is an Avro object container file of `schemas/event-export.v1.avsc`: per event the
household pseudonym and the facts the rules read, nothing else (no names, addresses, BSNs or
care details). `hub export events` writes it from the source topics, in the order the
matcher read them, and `hub backtest --events FILE` reads it back.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO, Final, cast

import fastavro
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastavro.write import Writer

from services.matcher.facts import Fact
from services.shared.avro import AvroCodec, load_schema_file
from services.shared.config import DEFAULT_SCHEMAS_DIR, HubSettings
from services.shared.errors import DecodeError
from services.shared.events import BY_SCHEMA_NAME, EventType
from services.shared.kafka import topic_partitions
from services.shared.topics import source_topic

EXPORT_SCHEMA_FILE: Final = DEFAULT_SCHEMAS_DIR / "event-export.v1.avsc"

Row = tuple[str, Fact]


EXPORT_RECORD: Final = "nl.twente.hub.backtest.EventBatch"


#: Events per batch, at least; a batch always ends with a household's last event.
BATCH_EVENTS: Final = 2000
CODEC = "deflate"

#: Fact's fields, in the order its constructor takes them; each is a column of a batch.
#: `health_data` is left out (it comes last): no rule reads it, and it would tell a reader
#: of the file which care indications are district nursing.
FACT_FIELDS: Final = tuple(f.name for f in fields(Fact) if f.name != "health_data")
#: Columns of few distinct texts, written as positions in the batch's `values`: decoding an
#: int is a quarter of the work of decoding a text.
CODED: Final = frozenset(
    {
        "event_type",
        "domain",
        "partner_id",
        "partner_type",
        "municipality_code",
        "wijk_code",
        "creditor_type",
        "creditor",
    }
)


def write_events(
    out: BinaryIO,
    rows: Iterable[Row],
    metadata: dict[str, str],
    schema_file: Path = EXPORT_SCHEMA_FILE,
) -> int:
    """Writes the rows as an Avro container file of batches, grouped per household (in
    order of first appearance, each household's events in the order given), one batch per
    block so that back-testing can hand blocks to separate processes. Returns the count."""
    households: dict[str, list[Fact]] = {}
    for household_id, fact in rows:
        households.setdefault(household_id, []).append(fact)
    batches: list[list[Row]] = [[]]
    for household_id, facts in households.items():
        if len(batches[-1]) >= BATCH_EVENTS:
            batches.append([])
        batches[-1].extend((household_id, f) for f in facts)
    batches = [b for b in batches if b]
    sizes = [len(b) for b in batches]
    writer = Writer(
        out,
        load_schema_file(schema_file).parsed,
        codec=CODEC,
        sync_interval=1 << 40,  # a block ends where _write_batch flushes: one batch a block
        metadata={
            **{f"hub.{k}": v for k, v in metadata.items()},
            # Read before any block, so the replay can plan its shares and its progress bar.
            "hub.events": str(sum(sizes)),
            "hub.batches": ",".join(map(str, sizes)),
        },
    )
    for batch in batches:
        _write_batch(writer, batch)
    return sum(sizes)


def _write_batch(writer: Writer, batch: list[Row]) -> None:
    values: dict[str, int] = {}

    def code(text: str | None) -> int:
        return -1 if text is None else values.setdefault(text, len(values))

    columns: dict[str, list[Any]] = {"household_id": [h for h, _ in batch]}
    for name in FACT_FIELDS:
        column = [getattr(f, name) for _, f in batch]
        columns[name] = [code(v) for v in column] if name in CODED else column
    columns["received_on"] = [f.received_on or f.event_date for _, f in batch]
    columns["values"] = list(values)
    writer.write(columns)
    writer.flush()


#: An Avro container block: its record count and byte size (zig-zag varints), the
#: data, and the file's 16-byte sync marker (Avro specification, "Object Container Files").
_SYNC_BYTES: Final = 16


def _read_long(stream: BinaryIO) -> int:
    value = shift = 0
    while True:
        byte = stream.read(1)
        if not byte:
            raise DecodeError("events file ends inside a block header")
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return (value >> 1) ^ -(value & 1)
        shift += 7


@dataclass(frozen=True)
class Block:
    """Where one batch of an events file starts, and how many events it holds."""

    offset: int
    events: int


@dataclass(frozen=True)
class EventsFile:
    path: Path

    def _open(self, stream: BinaryIO) -> Any:
        reader = fastavro.block_reader(stream)
        schema = reader.writer_schema
        name = schema.get("name") if isinstance(schema, dict) else None
        if name != EXPORT_RECORD:
            raise DecodeError(f"{self.path.name} is not an events export (schema {name!r})")
        return reader

    def metadata(self) -> dict[str, str]:
        """What `hub export events` recorded: the source, the range, the counts."""
        with self.path.open("rb") as stream:
            reader = self._open(stream)
            return {
                k.removeprefix("hub."): v.decode() if isinstance(v, bytes) else str(v)
                for k, v in reader.metadata.items()
                if k.startswith("hub.")
            }

    def blocks(self) -> list[Block]:
        """The file's batches: where each block starts (from the block headers, without
        decompressing anything) and its event count (from the file's metadata)."""
        sizes = [int(n) for n in self.metadata().get("batches", "").split(",") if n]
        offsets = []
        with self.path.open("rb") as stream:
            self._open(stream)  # reads the header; the stream now stands at the first block
            while stream.peek(1):
                offsets.append(stream.tell())
                _read_long(stream)  # records in the block
                stream.seek(_read_long(stream) + _SYNC_BYTES, io.SEEK_CUR)
        if len(sizes) != len(offsets):
            raise DecodeError(
                f"{self.path.name}: metadata lists {len(sizes)} batches, the file has "
                f"{len(offsets)}; was it written by `hub export events`?"
            )
        return [Block(o, n) for o, n in zip(offsets, sizes, strict=True)]

    def rows(self, blocks: Sequence[Block] | None = None) -> Iterator[Row]:
        """The events of the given consecutive blocks (all by default), in file order."""
        with self.path.open("rb") as stream:
            reader = self._open(stream)
            wanted = len(blocks) if blocks is not None else -1
            if blocks:
                stream.seek(blocks[0].offset)
            for n, block in enumerate(reader):
                if n == wanted:
                    break
                for batch in block:
                    yield from _rows(cast(dict[str, list[Any]], batch))


def _rows(batch: dict[str, list[Any]]) -> Iterator[Row]:
    # The last item stands for -1: no value.
    lookup = [*batch["values"], None].__getitem__
    columns = (map(lookup, batch[name]) if name in CODED else batch[name] for name in FACT_FIELDS)
    return zip(batch["household_id"], map(Fact, *columns), strict=True)


@dataclass(frozen=True)
class TopicRange:
    """Which part of the source topics to read: a time range (by the records' Kafka
    timestamps, the time ingest published them) and/or offsets, per partition."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    start_offset: int | None = None
    end_offset: int | None = None


async def topic_rows(settings: HubSettings, selection: TopicRange) -> AsyncIterator[Row]:
    """Reads the source topics from the range's start to its end, as they are when it starts.

    Records that do not decode, or are not source events, are skipped: the matcher
    dead-letters them, so they never made an alert either.
    """
    codec = AvroCodec(settings.schemas_dir)
    partitions = await topic_partitions(
        settings.kafka_bootstrap, [source_topic(settings, t) for t in EventType]
    )
    if not partitions:
        raise DecodeError(f"no source topics with prefix {settings.topic_prefix!r}")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        starts, ends = await _bounds(consumer, partitions, selection)
        pending = {tp for tp in partitions if starts[tp] < ends[tp]}
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, messages in batches.items():
                for message in messages:
                    if message.offset >= ends[tp]:
                        pending.discard(tp)
                        break
                    row = _decode(codec, message.key, message.value)
                    if row is not None:
                        yield row
                if tp in pending and await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()


async def _bounds(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], selection: TopicRange
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    first = await consumer.beginning_offsets(partitions)
    last = await consumer.end_offsets(partitions)
    starts = dict(first)
    ends = dict(last)
    if selection.since is not None:
        found = await consumer.offsets_for_times(
            {tp: int(selection.since.timestamp() * 1000) for tp in partitions}
        )
        starts = {tp: found[tp].offset if found[tp] else last[tp] for tp in partitions}
    if selection.until is not None:
        found = await consumer.offsets_for_times(
            {tp: int(selection.until.timestamp() * 1000) for tp in partitions}
        )
        ends = {tp: found[tp].offset if found[tp] else last[tp] for tp in partitions}
    if selection.start_offset is not None:
        starts = {tp: max(starts[tp], selection.start_offset) for tp in partitions}
    if selection.end_offset is not None:
        ends = {tp: min(ends[tp], selection.end_offset) for tp in partitions}
    return starts, ends


def _decode(codec: AvroCodec, key: bytes | None, value: bytes | None) -> Row | None:
    if value is None:
        return None
    try:
        schema_name, record = codec.decode(value)
    except DecodeError:
        return None
    if schema_name not in BY_SCHEMA_NAME or key != record["household_id"].encode():
        return None
    return record["household_id"], Fact.from_event(schema_name, record)
