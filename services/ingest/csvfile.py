"""Monthly partner files: reads a CSV file of one event type row by row, never all at once.

The columns are the dotted field paths of the type's model (`resident.birth_date`), derived
from the model itself, so a pydantic error at loc `("resident", "birth_date")` names its column
and the layout cannot drift from the JSON API. This module only turns cells into the nested
dict the model validates; validating, publishing and reporting are the upload endpoint's.
The format is documented for partners in docs/uploads.md.

Nothing here echoes a cell: a cell is personal data (a name, a birth date, a BSN).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import difflib
import io
import re
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum, StrEnum
from functools import cache
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from services.ingest.models import MODELS, PartnerEvent
from services.shared.errors import CsvProblem, CsvRefused
from services.shared.events import EventType

__all__ = [
    "Column",
    "ColumnKind",
    "CsvProblem",
    "CsvReader",
    "CsvRefused",
    "CsvRow",
    "columns",
    "write_csv",
]

LIST_SEPARATOR = "|"
DATE_MESSAGE = "date must be dd-mm-jjjj or jjjj-mm-dd"

_DUTCH_DATE = re.compile(r"(\d{1,2})-(\d{1,2})-(\d{4})", re.ASCII)
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
# Dutch Excel writes a boolean cell as WAAR or ONWAAR.
_TRUE = frozenset({"ja", "j", "true", "waar", "1"})
_FALSE = frozenset({"nee", "n", "false", "onwaar", "0"})
_BOOLEAN_MESSAGE = "must be ja or nee (or j/n, true/false, waar/onwaar, 1/0)"
_NAME_SHOWN = 60  # a header cell is echoed, but a long one is cut short


class ColumnKind(StrEnum):
    """How a column's cells are written."""

    TEXT = "text"
    INTEGER = "integer"
    DATE = "date"
    BOOLEAN = "boolean"
    CHOICE = "choice"
    LIST = "list"


@dataclass(frozen=True)
class Column:
    """One column of a type's file: a field path of its model."""

    name: str
    required: bool
    kind: ColumnKind
    description: str | None = None
    choices: tuple[str, ...] = ()  # the allowed values of a CHOICE column or a LIST's items


@dataclass(frozen=True)
class CsvRow:
    """One record of the file, converted but not yet validated by the model."""

    line: int  # where the record starts; the header is line 1
    data: dict[str, Any] | None  # for MODELS[type].model_validate; None when problems
    problems: list[CsvProblem]


def columns(event_type: EventType) -> list[Column]:
    """The columns of a type's file in the model's field order; required = a required field."""
    return list(_columns(event_type))


@cache
def _columns(event_type: EventType) -> tuple[Column, ...]:
    return tuple(_walk(MODELS[event_type], "", required=True))


def _walk(model: type[BaseModel], prefix: str, *, required: bool) -> Iterator[Column]:
    for name, info in model.model_fields.items():
        path = prefix + name
        needed = required and info.is_required()
        annotation = _without_none(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _walk(annotation, path + ".", required=needed)
            continue
        kind, choices = _kind(path, annotation)
        yield Column(path, needed, kind, info.description, choices)


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _kind(path: str, annotation: Any) -> tuple[ColumnKind, tuple[str, ...]]:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return ColumnKind.CHOICE, tuple(str(member.value) for member in annotation)
    simple = {bool: ColumnKind.BOOLEAN, int: ColumnKind.INTEGER, str: ColumnKind.TEXT}
    if annotation is dt.date:
        return ColumnKind.DATE, ()
    if annotation in simple:
        return simple[annotation], ()
    if get_origin(annotation) is list:
        item_kind, choices = _kind(path, get_args(annotation)[0])
        if item_kind in (ColumnKind.CHOICE, ColumnKind.TEXT):
            return ColumnKind.LIST, choices
    # A new field type needs a written form here (and in docs/uploads.md) before it can ship.
    raise TypeError(f"{path}: no CSV form for the field type {annotation!r}")


class CsvReader:
    """Reads one type's file from its raw byte lines; checks the header on construction.

    Iterating yields one `CsvRow` per record (a record may span lines inside quotes); blank
    lines are skipped. Only the current record is held, whatever the size of the file.
    """

    def __init__(self, event_type: EventType, lines: Iterable[bytes]) -> None:
        self.event_type = event_type
        source = iter(lines)
        self.delimiter, self.layout = _read_header(columns(event_type), next(source, None))
        self._cells = [_Cell.of(column) for column in self.layout]
        self._groups = _required_groups(self.layout)
        self._line = 1  # the number of the last line handed to the csv module
        self._undecodable = False  # whether a line of the current record is not UTF-8
        self._records = csv.reader(self._decoded(source), delimiter=self.delimiter)

    def __iter__(self) -> Iterator[CsvRow]:
        width = len(self.layout)
        while True:
            start = self._line + 1
            self._undecodable = False
            try:
                cells = next(self._records)
            except StopIteration:
                return
            except csv.Error as error:  # an unclosed quote that runs on past the field limit
                yield _refused_row(
                    start, f"cannot be read as CSV ({error}); is a quote not closed?"
                )
                continue
            if self._undecodable:
                yield _refused_row(start, "not UTF-8; save the file as UTF-8")
            elif not any(cell.strip() for cell in cells):
                continue
            elif len(cells) != width:
                hint = " (is a quote not closed?)" if self._line > start else ""
                yield _refused_row(
                    start, f"has {len(cells)} cells where the header has {width}{hint}"
                )
            else:
                yield self._convert(start, cells)

    def _decoded(self, lines: Iterator[bytes]) -> Iterator[str]:
        """The lines as text for the csv module, which pulls them one at a time."""
        for raw in lines:
            self._line += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                # Replacement characters keep the record's quotes and delimiters where they
                # were, so the next record is still found; this record is refused.
                self._undecodable = True
                text = raw.decode("utf-8", errors="replace")
            yield text

    def _convert(self, line: int, cells: list[str]) -> CsvRow:
        data: dict[str, Any] = {}
        for group in self._groups:
            _within(data, group)
        problems: list[CsvProblem] = []
        for cell, raw in zip(self._cells, cells, strict=True):
            text = raw.strip()
            if not text:
                continue  # absent: the model's default or its "Field required" applies
            value: Any = text  # the model converts text (lax mode reads "120" as 120)
            if cell.convert is not None:
                try:
                    value = cell.convert(text)
                except ValueError as error:
                    problems.append(CsvProblem(cell.name, str(error)))
                    continue
            (_within(data, cell.parents) if cell.parents else data)[cell.key] = value
        return CsvRow(line, None if problems else data, problems)


@dataclass(frozen=True)
class _Cell:
    """Where a column's cells go in the nested dict, and how they are converted first."""

    name: str
    parents: tuple[str, ...]
    key: str
    convert: Callable[[str], Any] | None

    @classmethod
    def of(cls, column: Column) -> _Cell:
        *parents, key = column.name.split(".")
        return cls(column.name, tuple(parents), key, _CONVERTERS.get(column.kind))


def _within(data: dict[str, Any], parents: tuple[str, ...]) -> dict[str, Any]:
    """The dict at `parents` inside `data`, made on the way where missing."""
    for part in parents:
        data = data.setdefault(part, {})
    return data


def _read_header(layout: list[Column], first: bytes | None) -> tuple[str, list[Column]]:
    if first is None:
        raise CsvRefused([CsvProblem("file", "the file is empty")])
    first = first.removeprefix(codecs.BOM_UTF8)
    try:
        text = first.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise CsvRefused([CsvProblem("file", "not UTF-8; save the file as UTF-8")]) from None
    if not text.strip():
        raise CsvRefused([CsvProblem("header", "the first line must name the columns")])
    if "\r" in text:
        raise CsvRefused(
            [CsvProblem("file", "lines end in a lone carriage return; use LF or CRLF")]
        )
    delimiter = ";" if ";" in text else ","
    names = [name.strip().lower() for name in next(csv.reader([text], delimiter=delimiter))]
    if len(names) == 1:
        found = "tabs" if "\t" in text else "nothing"
        raise CsvRefused(
            [CsvProblem("header", f"columns are separated by {found}; separate them with ; or ,")]
        )
    known = {column.name: column for column in layout}
    if not known.keys() & set(names):
        # Probably a data row where the header should be: do not echo its cells.
        raise CsvRefused(
            [CsvProblem("header", "the first line names no known column; it must be the header")]
        )
    problems: list[CsvProblem] = []
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name:
            problems.append(CsvProblem("header", f"column {position} has no name"))
        elif name not in known:
            # Never the cell itself: a first line mixing column names and data would echo a
            # name or a birth date. The position, and a known name as the hint, are safe.
            problems.append(CsvProblem("header", _unknown(position, name, known)))
        elif name in seen:
            problems.append(CsvProblem("header", f"column {_shown(name)} appears more than once"))
        seen.add(name)
    problems += [
        CsvProblem("header", f"required column {_shown(column.name)} is missing")
        for column in layout
        if column.required and column.name not in seen
    ]
    if problems:
        raise CsvRefused(problems)
    return delimiter, [known[name] for name in names]


def _shown(name: str) -> str:
    return repr(name if len(name) <= _NAME_SHOWN else name[:_NAME_SHOWN] + "…")


def _unknown(position: int, name: str, known: dict[str, Column]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {_shown(close[0])}?" if close else ""
    return f"column {position} is not a column of this file type{hint}"


def _required_groups(layout: list[Column]) -> list[tuple[str, ...]]:
    """The nested objects a record always carries (`resident`, `address`), even when empty.

    Then a missing value is reported by the model at its column (`resident.name`), not at
    the group (`resident`).
    """
    groups = {tuple(c.name.split(".")[:-1]) for c in layout if c.required and "." in c.name}
    return sorted(groups)


def _iso_date(text: str) -> str:
    return _date(text).isoformat()


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(_BOOLEAN_MESSAGE)


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(LIST_SEPARATOR) if item.strip()]


# Conversions of a stripped, non-empty cell; their ValueError names no cell value.
_CONVERTERS: dict[ColumnKind, Callable[[str], Any]] = {
    ColumnKind.DATE: _iso_date,
    ColumnKind.BOOLEAN: _boolean,
    ColumnKind.LIST: _list,
}


def _date(text: str) -> dt.date:
    if match := _DUTCH_DATE.fullmatch(text):
        day, month, year = int(match[1]), int(match[2]), int(match[3])
    elif match := _ISO_DATE.fullmatch(text):
        year, month, day = int(match[1]), int(match[2]), int(match[3])
    else:
        raise ValueError(DATE_MESSAGE)
    try:
        return dt.date(year, month, day)
    except ValueError:
        raise ValueError("date does not exist (day or month out of range)") from None


def _refused_row(line: int, message: str) -> CsvRow:
    return CsvRow(line, None, [CsvProblem("row", message)])


def write_csv(
    event_type: EventType,
    events: Iterable[PartnerEvent],
    delimiter: str = ";",
    dutch_dates: bool = True,
) -> Iterator[str]:
    """The file of `events`, one line at a time (header first), that CsvReader reads back.

    A line ends in LF; a cell with the delimiter, a quote or a newline is quoted.
    """
    model, layout = MODELS[event_type], columns(event_type)
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")

    def line(cells: list[str]) -> str:
        writer.writerow(cells)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield line([column.name for column in layout])
    for event in events:
        if not isinstance(event, model):
            raise TypeError(f"a {type(event).__name__} is not a {event_type} event")
        yield line([_cell(event, column, dutch_dates) for column in layout])


def _cell(event: PartnerEvent, column: Column, dutch_dates: bool) -> str:
    value: Any = event
    for part in column.name.split("."):
        value = getattr(value, part)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "ja" if value else "nee"
    if isinstance(value, dt.date):
        return value.strftime("%d-%m-%Y") if dutch_dates else value.isoformat()
    if isinstance(value, list):
        return LIST_SEPARATOR.join(_text(item) for item in value)
    return _text(value)


def _text(value: Any) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)
