"""The privacy audit scan: finds what looks like raw personal data wherever the hub keeps data.

No BSN, name, birth date or street address may appear on a topic, in a log line, a metric or
a database column other than an encrypted (bytea) one. The `Detector` recognises such values;
`scan_kafka`, `scan_database`, `scan_logs` and `scan_metrics` run it over each place, and
`scan_all` over all of them. A finding says where and what kind, never the value it found:
the report must not leak what it is looking for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final
from uuid import UUID

import httpx
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection, LargeBinary, column, inspect, select, table
from sqlalchemy.ext.asyncio import create_async_engine

from services.shared.avro import AvroCodec
from services.shared.config import HubSettings
from services.shared.errors import DecodeError
from services.shared.identity import bsn_is_valid
from services.shared.kafka import read_to_end
from services.shared.topics import holds_identity


class Kind(StrEnum):
    """What a finding looks like."""

    BSN = "bsn"
    POSTCODE_HOUSE_NUMBER = "postcode-house-number"
    BIRTH_DATE_WITH_NAME = "birth-date-with-name"
    CANARY = "canary"


#: A detector hit inside one record: the field path (None for free text) and the kind.
Hit = tuple[str | None, Kind]

#: Younger people have no debts or care records of their own; the age also keeps the recent
#: event dates the hub publishes next to creditor names from counting as birth dates.
MIN_AGE_YEARS: Final = 14
#: How far apart a date and a name may stand in free text to count as one person's.
NAME_DATE_DISTANCE: Final = 60

# The lookarounds keep digit runs inside hex pseudonyms (hh1-3f2a...) and UUIDs out.
_BSN: Final = re.compile(r"(?<![0-9A-Za-z])\d{9}(?![0-9A-Za-z])")
# With a space the letters must be capitals, as PostNL writes them: otherwise Dutch prose
# such as "tussen 2015 en 2016" would read as postcode plus house number.
_POSTCODE: Final = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{3}(?:[A-Za-z]{2}| [A-Z]{2})(?![0-9A-Za-z])")
_POSTCODE_VALUE: Final = re.compile(r"\s*[1-9]\d{3} ?[A-Za-z]{2}\s*")
_UNUSED_POSTCODE_LETTERS: Final = frozenset({"SA", "SD", "SS"})
_SEPARATOR: Final = r"[\s,;:|/-]{1,3}"
_NUMBER_AFTER: Final = re.compile(rf"{_SEPARATOR}[1-9]\d{{0,4}}(?!\d)")
_NUMBER_BEFORE: Final = re.compile(rf"(?<![0-9A-Za-z.-])[1-9]\d{{0,4}}(?: ?[A-Za-z])?{_SEPARATOR}$")
_HOUSE_NUMBER_VALUE: Final = re.compile(r"\s*[1-9]\d{0,4} ?[A-Za-z]?\s*")
_ISO_DATE: Final = re.compile(r"(?<!\d)(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})(?!\d)")
_DUTCH_DATE: Final = re.compile(r"(?<![\d-])(?P<d>\d{1,2})-(?P<m>\d{1,2})-(?P<y>\d{4})(?!\d)")
_WORD: Final = r"[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+(?:-[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+)?"
_PARTICLE: Final = r"(?:van|de|der|den|het|ter|ten|te|'t)"
_NAME: Final = re.compile(rf"(?<!\w){_WORD}(?:\s+(?:{_PARTICLE}\s+)*{_WORD})+(?!\w)")


class Detector:
    """Recognises raw personal data in free text and in decoded records; pure, no I/O."""

    def __init__(self, canaries: Iterable[str] = (), *, today: dt.date | None = None) -> None:
        canaries = list(canaries)
        if any(len(c.strip()) < 4 for c in canaries):
            # A short canary would match everywhere and drown the report.
            raise ValueError("canary values must be at least 4 characters long")
        self._canaries = tuple(c.strip().casefold() for c in canaries)
        today = today or dt.date.today()
        try:
            self._born_before = today.replace(year=today.year - MIN_AGE_YEARS)
        except ValueError:  # today is 29 February
            self._born_before = today.replace(year=today.year - MIN_AGE_YEARS, day=28)

    def kinds_in_text(self, text: str) -> set[Kind]:
        """Kinds found in one piece of free text, such as a log line."""
        kinds = self._plain_kinds(text)
        dates = self._old_date_spans(text)
        if dates and any(
            _distance(date, name.span()) <= NAME_DATE_DISTANCE
            for date in dates
            for name in _NAME.finditer(text)
        ):
            kinds.add(Kind.BIRTH_DATE_WITH_NAME)
        return kinds

    def hits_in_record(self, record: Any) -> set[Hit]:
        """Hits in a decoded record (nested dicts and lists); a date and a name anywhere in
        the same record count as a birth date with a name."""
        hits: set[Hit] = set()
        old_dates: list[str | None] = []
        has_name = False
        for path, value in _leaves(record, ""):
            where = path or None
            if value is None or isinstance(value, bool | dt.datetime):
                # A timestamp says when something happened to the hub, not when someone was born.
                continue
            if isinstance(value, int):
                if len(str(value)) == 9 and bsn_is_valid(str(value)):
                    hits.add((where, Kind.BSN))
                continue
            if isinstance(value, dt.date):
                if self._is_old(value):
                    old_dates.append(where)
                continue
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            hits.update((where, kind) for kind in self._plain_kinds(text))
            if self._old_date_spans(text):
                old_dates.append(where)
            has_name = has_name or _NAME.search(text) is not None
        if has_name:
            hits.update((where, Kind.BIRTH_DATE_WITH_NAME) for where in old_dates)
        hits.update((path, Kind.POSTCODE_HOUSE_NUMBER) for path in _postcodes_with_number(record))
        return hits

    def _plain_kinds(self, text: str) -> set[Kind]:
        kinds: set[Kind] = set()
        if any(bsn_is_valid(m[0]) for m in _BSN.finditer(text)):
            kinds.add(Kind.BSN)
        if any(_has_house_number(text, m) for m in _POSTCODE.finditer(text)):
            kinds.add(Kind.POSTCODE_HOUSE_NUMBER)
        folded = text.casefold()
        if any(c in folded for c in self._canaries):
            kinds.add(Kind.CANARY)
        return kinds

    def _old_date_spans(self, text: str) -> list[tuple[int, int]]:
        spans = []
        for pattern in (_ISO_DATE, _DUTCH_DATE):
            for m in pattern.finditer(text):
                try:
                    day = dt.date(int(m["y"]), int(m["m"]), int(m["d"]))
                except ValueError:
                    continue
                if self._is_old(day):
                    spans.append(m.span())
        return spans

    def _is_old(self, day: dt.date) -> bool:
        # Before 1900 is a placeholder (0001-01-01), not a birth date of a living person.
        return day.year >= 1900 and day < self._born_before


def _distance(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, b[0] - a[1], a[0] - b[1])


def _has_house_number(text: str, postcode: re.Match[str]) -> bool:
    if postcode[0][-2:].upper() in _UNUSED_POSTCODE_LETTERS:
        return False
    start, end = postcode.span()
    return bool(
        _NUMBER_AFTER.match(text, end) or _NUMBER_BEFORE.search(text, max(0, start - 12), start)
    )


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def _postcodes_with_number(value: Any, path: str = "") -> Iterator[str]:
    """Paths of postcode values that share their (sub)record with a house-number value."""
    if isinstance(value, Mapping):
        has_number = any(_is_house_number(v) for v in value.values())
        for key, item in value.items():
            item_path = f"{path}.{key}" if path else str(key)
            if has_number and _is_postcode(item):
                yield item_path
            yield from _postcodes_with_number(item, item_path)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _postcodes_with_number(item, f"{path}[{index}]")


def _is_postcode(value: Any) -> bool:
    return (
        isinstance(value, str)
        and _POSTCODE_VALUE.fullmatch(value) is not None
        and value.strip()[-2:].upper() not in _UNUSED_POSTCODE_LETTERS
    )


def _is_house_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 1 <= value <= 99999
    return isinstance(value, str) and _HOUSE_NUMBER_VALUE.fullmatch(value) is not None


@dataclass(frozen=True)
class Finding:
    """Where something that looks like personal data was found; never the value itself."""

    place: str
    location: str
    field: str | None
    kind: Kind


@dataclass
class ScanResult:
    """Findings of one or more places, and how much of each place was read."""

    findings: list[Finding] = field(default_factory=list)
    scanned: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def tally(self, place: str, location: str, hits: Iterable[Hit]) -> None:
        """Counts one record, row or line of `place` and adds its hits as findings."""
        self.scanned[place] = self.scanned.get(place, 0) + 1
        for where, kind in sorted(hits, key=lambda h: (h[0] or "", h[1])):
            self.findings.append(Finding(place, location, where, kind))

    def merge(self, other: ScanResult) -> ScanResult:
        scanned = dict(self.scanned)
        for place, count in other.scanned.items():
            scanned[place] = scanned.get(place, 0) + count
        return ScanResult(
            [*self.findings, *other.findings], scanned, [*self.skipped, *other.skipped]
        )

    def to_json(self) -> dict[str, Any]:
        by_place: dict[str, dict[str, Any]] = {
            place: {"scanned": count, "findings": 0, "kinds": {}}
            for place, count in self.scanned.items()
        }
        for finding in self.findings:
            entry = by_place.setdefault(finding.place, {"scanned": 0, "findings": 0, "kinds": {}})
            entry["findings"] += 1
            entry["kinds"][finding.kind.value] = entry["kinds"].get(finding.kind.value, 0) + 1
        return {
            "findings": len(self.findings),
            "by_place": by_place,
            "details": [asdict(f) | {"kind": f.kind.value} for f in self.findings],
            "skipped_encrypted_columns": list(self.skipped),
        }


#: What `scan_all` returns: the merged results of every place.
ScanReport = ScanResult


def hub_topics(all_topic_names: Iterable[str], settings: HubSettings) -> list[str]:
    """The hub's own topics and the matcher's Faust changelogs; never Kafka's internal ones,
    and not the intake topics, where partners' producers send identity by design."""
    return sorted(
        name
        for name in all_topic_names
        if not name.startswith("__")
        and not holds_identity(settings, name)
        and (
            name.startswith(f"{settings.topic_prefix}.") or name.startswith(settings.matcher_app_id)
        )
    )


def _decode_value(codec: AvroCodec, data: bytes) -> Any:
    """The hub's Avro records, else JSON (Faust changelogs), else the bytes as text."""
    try:
        return codec.decode(data)[1]
    except DecodeError:
        pass
    try:
        return json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return data.decode(errors="replace")


def _message_hits(
    detector: Detector,
    codec: AvroCodec,
    key: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    value: bytes | None,
) -> set[Hit]:
    hits: set[Hit] = set()
    if key is not None:
        text = key.decode(errors="replace")
        hits.update(("(key)", kind) for kind in detector.kinds_in_text(text))
    for name, header in headers:
        if header is not None:
            text = header.decode(errors="replace")
            hits.update((f"(header {name})", kind) for kind in detector.kinds_in_text(text))
    if value is not None:
        decoded = _decode_value(codec, value)
        if isinstance(decoded, str):
            hits.update((None, kind) for kind in detector.kinds_in_text(decoded))
        else:
            hits.update(detector.hits_in_record(decoded))
    return hits


async def scan_kafka(
    bootstrap: str, topics: Sequence[str], codec: AvroCodec, detector: Detector
) -> ScanResult:
    """Reads every partition of `topics` from the beginning up to where it ended at the start."""
    result = ScanResult()
    for topic in topics:
        result.scanned[f"topic {topic}"] = 0
    async for message in read_to_end(bootstrap, topics):
        hits = _message_hits(detector, codec, message.key, message.headers, message.value)
        location = f"partition {message.partition} offset {message.offset}"
        result.tally(f"topic {message.topic}", location, hits)
    return result


@dataclass(frozen=True)
class _Table:
    name: str
    primary_key: list[str]
    readable: list[str]
    encrypted: list[str]


def _describe_tables(connection: Connection) -> list[_Table]:
    inspector = inspect(connection)
    tables = []
    for name in sorted(inspector.get_table_names(schema="public")):
        if name == "alembic_version":
            continue
        columns = inspector.get_columns(name, schema="public")
        encrypted = [c["name"] for c in columns if isinstance(c["type"], LargeBinary)]
        tables.append(
            _Table(
                name,
                list(inspector.get_pk_constraint(name, schema="public")["constrained_columns"]),
                [c["name"] for c in columns if c["name"] not in encrypted],
                encrypted,
            )
        )
    return tables


def _row_location(
    detector: Detector, primary_key: list[str], row: Mapping[str, Any], number: int
) -> str:
    """The row's primary key, unless a key value could itself be personal data."""
    if not primary_key:
        return f"row {number}"
    values = [row.get(name) for name in primary_key]
    safe = all(
        isinstance(v, str | int | UUID)
        and not isinstance(v, bool)
        and not detector.hits_in_record(v)
        for v in values
    )
    if not safe:
        return ", ".join(primary_key)
    return ", ".join(f"{name}={value}" for name, value in zip(primary_key, values, strict=True))


async def scan_database(database_url: str, detector: Detector) -> ScanResult:
    """Reads every row of every table in `public`, except the ciphertext in bytea columns."""
    result = ScanResult()
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            for described in await connection.run_sync(_describe_tables):
                place = f"table {described.name}"
                result.scanned[place] = 0
                result.skipped.extend(f"{described.name}.{c}" for c in described.encrypted)
                if not described.readable:
                    continue
                source = table(
                    described.name, *(column(c) for c in described.readable), schema="public"
                )
                query = select(*source.c).execution_options(yield_per=1000)
                rows = await connection.stream(query)
                number = 0
                async for mapping in rows.mappings():
                    number += 1
                    row = dict(mapping)
                    location = _row_location(detector, described.primary_key, row, number)
                    result.tally(place, location, detector.hits_in_record(row))
    finally:
        await engine.dispose()
    return result


def _line_hits(detector: Detector, line: str) -> set[Hit]:
    """A JSON log line is checked field by field, any other line as free text."""
    if line.lstrip().startswith("{"):
        try:
            return detector.hits_in_record(json.loads(line))
        except ValueError:
            pass
    return {(None, kind) for kind in detector.kinds_in_text(line)}


def scan_logs(paths: Sequence[Path], detector: Detector) -> ScanResult:
    result = ScanResult()
    for path in paths:
        place = f"log {path}"
        result.scanned[place] = 0
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                result.tally(place, f"line {number}", _line_hits(detector, line))
    return result


def _metrics_line_hits(detector: Detector, line: str) -> set[Hit]:
    """Label values by label name; the sample value is skipped, since a nine-digit byte
    count would pass the eleven-check one time in eleven."""
    if line.startswith("#"):
        return {(None, kind) for kind in detector.kinds_in_text(line)}
    try:
        samples = [s for f in text_string_to_metric_families(line + "\n") for s in f.samples]
    except ValueError:
        return {(None, kind) for kind in detector.kinds_in_text(line)}
    hits: set[Hit] = set()
    for sample in samples:
        hits.update(detector.hits_in_record({"__name__": sample.name, **sample.labels}))
    return hits


async def scan_metrics(urls: Sequence[str], detector: Detector) -> ScanResult:
    """Fetches each Prometheus text exposition and checks every line."""
    result = ScanResult()
    async with httpx.AsyncClient(timeout=10) as client:
        for url in urls:
            response = await client.get(url)
            response.raise_for_status()
            place = f"metrics {url}"
            result.scanned[place] = 0
            for number, line in enumerate(response.text.splitlines(), start=1):
                if line.strip():
                    result.tally(place, f"line {number}", _metrics_line_hits(detector, line))
    return result


async def _topic_names(bootstrap: str) -> set[str]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


async def scan_all(
    settings: HubSettings,
    *,
    database_url: str,
    log_paths: Sequence[Path] = (),
    metrics_urls: Sequence[str] = (),
    canaries: Sequence[str] = (),
) -> ScanReport:
    """Scans the hub's topics, its database, the given log files and metrics endpoints."""
    detector = Detector(canaries)
    codec = AvroCodec(settings.schemas_dir)
    topics = hub_topics(await _topic_names(settings.kafka_bootstrap), settings)
    kafka, database, metrics = await asyncio.gather(
        scan_kafka(settings.kafka_bootstrap, topics, codec, detector),
        scan_database(database_url, detector),
        scan_metrics(metrics_urls, detector),
    )
    return kafka.merge(database).merge(scan_logs(log_paths, detector)).merge(metrics)
