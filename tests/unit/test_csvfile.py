"""Monthly partner files: the CSV reader, its column layout, the documented tables, examples."""

from __future__ import annotations

import codecs
import datetime as dt
import io
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.ingest.csvfile import (
    DATE_MESSAGE,
    ColumnKind,
    CsvProblem,
    CsvReader,
    CsvRefused,
    CsvRow,
    columns,
    write_csv,
)
from services.ingest.models import MODELS, PartnerEvent, StreettriageHandoverIn, WvggzReportIn
from services.shared.events import EventType

DOCS = Path(__file__).resolve().parents[2] / "docs"
WVGGZ = EventType.WVGGZ_REPORT
DEBT = EventType.DEBT_SIGNAL

# One valid wvggz-report row (required columns and wijk_code), column by column.
ROW = {
    "partner_event_id": "WV-1",
    "resident.name": "Test Persoon 1",
    "resident.birth_date": "14-03-1980",
    "address.street": "Teststraat",
    "address.house_number": "12",
    "address.postcode": "7511AB",
    "address.city": "Enschede",
    "municipality_code": "GM0153",
    "wijk_code": "WK015301",
    "report_date": "04-03-2025",
    "reporter_category": "NEIGHBOUR",
}
HEADER = ";".join(ROW)
LINE = ";".join(ROW.values())
DEBT_ROW = {
    **ROW,
    "partner_event_id": "DS-1",
    "creditor_type": "HUUR",
    "creditor_name": "Test Woonstichting",
    "amount_eur": "1200",
    "arrear_start_date": "01-12-2024",
    "signal_date": "05-03-2025",
}
del DEBT_ROW["report_date"], DEBT_ROW["reporter_category"]


def lines_of(text: str | bytes) -> Iterator[bytes]:
    """The file's byte lines from a generator, as the upload endpoint hands them over."""
    data = text.encode() if isinstance(text, str) else text
    yield from io.BytesIO(data)  # split at b"\n" only, as iterating a binary file does


def read(text: str | bytes, event_type: EventType = WVGGZ) -> list[CsvRow]:
    return list(CsvReader(event_type, lines_of(text)))


def refusal(text: str | bytes, event_type: EventType = WVGGZ) -> list[CsvProblem]:
    with pytest.raises(CsvRefused) as caught:
        CsvReader(event_type, lines_of(text))
    return caught.value.problems


def with_cells(row: dict[str, str], **cells: str) -> str:
    """A header and one data line of `row`, some cells replaced (`resident__name` for dots)."""
    changed = {**row, **{name.replace("__", "."): value for name, value in cells.items()}}
    return ";".join(changed) + "\n" + ";".join(changed.values()) + "\n"


# --- reading ---------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [";", ","])
def test_a_row_becomes_the_nested_dict_the_json_api_takes(delimiter: str) -> None:
    text = delimiter.join(ROW) + "\n" + delimiter.join(ROW.values()) + "\n"
    (row,) = read(text)
    assert row.line == 2
    assert row.problems == []
    assert row.data == {
        "partner_event_id": "WV-1",
        "resident": {"name": "Test Persoon 1", "birth_date": "1980-03-14"},
        "address": {
            "street": "Teststraat",
            "house_number": "12",
            "postcode": "7511AB",
            "city": "Enschede",
        },
        "municipality_code": "GM0153",
        "wijk_code": "WK015301",
        "report_date": "2025-03-04",
        "reporter_category": "NEIGHBOUR",
    }
    event = MODELS[WVGGZ].model_validate(row.data)
    assert event.resident.birth_date == dt.date(1980, 3, 14)


def test_a_bom_and_crlf_line_ends_are_read_as_plain_text() -> None:
    text = codecs.BOM_UTF8 + f"{HEADER}\r\n{LINE}\r\n".encode()
    (row,) = read(text)
    assert row.data is not None
    assert row.data["partner_event_id"] == "WV-1"  # the BOM is not part of the first column
    assert row.data["reporter_category"] == "NEIGHBOUR"  # nor is the CR part of the last


@pytest.mark.parametrize("written", ["03-02-2025", "3-2-2025", "2025-02-03", " 03-02-2025 "])
def test_dutch_and_iso_dates_are_the_same_day(written: str) -> None:
    (row,) = read(with_cells(ROW, report_date=written))
    assert row.data is not None
    assert WvggzReportIn.model_validate(row.data).report_date == dt.date(2025, 2, 3)


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("14/03/1980", DATE_MESSAGE),
        ("1980-3-14", DATE_MESSAGE),
        ("14 maart 1980", DATE_MESSAGE),
        ("31-02-1980", "date does not exist (day or month out of range)"),
    ],
)
def test_a_bad_date_names_its_column_and_never_the_birth_date(written: str, message: str) -> None:
    (row,) = read(with_cells(ROW, resident__birth_date=written))
    assert row.data is None
    assert row.problems == [CsvProblem("resident.birth_date", message)]
    assert "1980" not in message


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("ja", True),
        ("NEE", False),
        ("j", True),
        ("N", False),
        ("True", True),
        ("0", False),
        ("WAAR", True),
        ("onwaar", False),
        ("1", True),
    ],
)
def test_booleans_are_read_in_dutch_and_english(written: str, value: bool) -> None:
    (row,) = read(with_cells(DEBT_ROW, crisis=written, warm_handover=written), DEBT)
    assert row.data is not None
    assert (row.data["crisis"], row.data["warm_handover"]) == (value, value)


def test_a_bad_boolean_names_its_column_and_not_its_value() -> None:
    (row,) = read(with_cells(DEBT_ROW, crisis="misschien", warm_handover="ja"), DEBT)
    assert row.data is None
    assert [p.field for p in row.problems] == ["crisis"]
    assert "misschien" not in row.problems[0].message


def test_every_fault_of_a_row_is_reported_at_once() -> None:
    text = with_cells(DEBT_ROW, crisis="?", signal_date="gisteren", resident__birth_date="x")
    (row,) = read(text, DEBT)
    assert [p.field for p in row.problems] == ["resident.birth_date", "signal_date", "crisis"]


def test_an_empty_cell_is_an_absent_field_and_the_model_names_the_column() -> None:
    text = with_cells(ROW, wijk_code="  ", resident__name="", resident__birth_date="")
    (row,) = read(text)
    assert row.data is not None
    assert "wijk_code" not in row.data
    assert row.data["resident"] == {}  # kept, so a missing name is reported at its column
    with pytest.raises(ValidationError) as caught:
        MODELS[WVGGZ].model_validate(row.data)
    columns_named = {".".join(map(str, e["loc"])) for e in caught.value.errors()}
    assert columns_named == {"resident.name", "resident.birth_date"}


def test_a_pydantic_error_location_is_the_column_name() -> None:
    (row,) = read(with_cells(ROW, address__postcode="ABCD", reporter_category="BUURMAN"))
    with pytest.raises(ValidationError) as caught:
        MODELS[WVGGZ].model_validate(row.data)
    named = {".".join(map(str, e["loc"])) for e in caught.value.errors()}
    assert named == {"address.postcode", "reporter_category"}
    assert named <= {c.name for c in columns(WVGGZ)}


def test_a_written_house_number_and_a_list_pass_to_the_model() -> None:
    handover = {k: v for k, v in ROW.items() if k not in ("report_date", "reporter_category")}
    handover |= {"handover_date": "06-03-2025", "outcome": "REFERRED_TO_GGZ"}
    text = with_cells(handover, address__house_number="12a", problem_areas=" FINANCES | HOUSING")
    (row,) = read(text, EventType.STREETTRIAGE_HANDOVER)
    assert row.data is not None
    event = StreettriageHandoverIn.model_validate(row.data)
    assert (event.address.house_number, event.address.house_letter) == (12, "A")
    assert event.problem_areas == ["FINANCES", "HOUSING"]


def test_a_quoted_cell_keeps_its_delimiter_quote_and_line_break() -> None:
    quoted = '"Test ""Persoon""; eerste regel\ntweede regel"'
    text = with_cells(ROW, resident__name=quoted) + LINE.replace("WV-1", "WV-2") + "\n"
    first, second = read(text)
    assert first.data is not None
    assert first.data["resident"]["name"] == 'Test "Persoon"; eerste regel\ntweede regel'
    assert (first.line, second.line) == (2, 4)  # the record took lines 2 and 3


def test_blank_lines_are_skipped_but_counted() -> None:
    text = f"{HEADER}\n\n{LINE}\n   \n;;;;;;;;;;\r\n{LINE}\n\n"
    rows = read(text)
    assert [r.line for r in rows] == [3, 6]
    assert all(r.data is not None for r in rows)


def test_a_line_that_is_not_utf8_is_reported_and_the_next_row_is_read() -> None:
    latin = LINE.replace("Test Persoon 1", "Test Persoon Ëlla").encode("cp1252")
    text = f"{HEADER}\n{LINE}\n".encode() + latin + b"\n" + f"{LINE}\n".encode()
    first, bad, last = read(text)
    assert first.data is not None and last.data is not None
    assert (bad.line, bad.data) == (3, None)
    assert bad.problems == [CsvProblem("row", "not UTF-8; save the file as UTF-8")]
    assert last.line == 4


def test_a_row_with_the_wrong_number_of_cells_is_refused_with_the_counts() -> None:
    rows = read(f"{HEADER}\n{LINE};extra\n{LINE}\nWV-3;Test Persoon 3\n")
    assert [r.problems for r in rows] == [
        [CsvProblem("row", "has 12 cells where the header has 11")],
        [],
        [CsvProblem("row", "has 2 cells where the header has 11")],
    ]
    assert [r.line for r in rows] == [2, 3, 4]


def test_a_quote_that_is_never_closed_is_reported_at_its_row() -> None:
    runaway = 'WV-2;"Test Persoon 2' + "\n" + ("x" * 99 + "\n") * 1400  # past csv's field limit
    rows = read(f"{HEADER}\n{LINE}\n{runaway}")
    assert rows[0].data is not None
    assert rows[1].line == 3
    assert rows[1].problems[0].field == "row"
    assert "quote" in rows[1].problems[0].message
    assert all(r.data is None for r in rows[1:])


# --- refusing the whole file ----------------------------------------------------------


def test_unknown_columns_are_refused_by_position_and_missing_ones_by_name() -> None:
    text = HEADER.replace("resident.birth_date", "resident.birthdate") + ";kleur\n" + LINE
    position = HEADER.split(";").index("resident.birth_date") + 1
    assert refusal(text) == [
        CsvProblem(
            "header",
            f"column {position} is not a column of this file type; "
            "did you mean 'resident.birth_date'?",
        ),
        CsvProblem(
            "header", f"column {len(HEADER.split(';')) + 1} is not a column of this file type"
        ),
        CsvProblem("header", "required column 'resident.birth_date' is missing"),
    ]


def test_a_first_line_mixing_names_and_data_echoes_no_cell() -> None:
    data_cells = "Test Persoon 7;01-02-1970;7511AB"
    problems = refusal(f"partner_event_id;{data_cells}\n")
    assert problems and all(
        cell not in p.message for p in problems for cell in data_cells.split(";")
    )


def test_a_repeated_or_unnamed_column_is_refused() -> None:
    assert refusal(f"{HEADER};report_date;\n") == [
        CsvProblem("header", "column 'report_date' appears more than once"),
        CsvProblem("header", "column 13 has no name"),
    ]


def test_column_names_ignore_case_and_spaces() -> None:
    header = ";".join(f" {name.upper()} " for name in ROW)
    (row,) = read(f"{header}\n{LINE}\n")
    assert row.data is not None


def test_a_file_without_a_header_is_refused_without_echoing_the_first_row() -> None:
    problems = refusal(f"{LINE}\n{LINE}\n")
    assert problems == [
        CsvProblem("header", "the first line names no known column; it must be the header")
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"", CsvProblem("file", "the file is empty")),
        (f"\n{HEADER}\n".encode(), CsvProblem("header", "the first line must name the columns")),
        (
            HEADER.replace(";", "\t").encode(),
            CsvProblem("header", "columns are separated by tabs; separate them with ; or ,"),
        ),
        (
            HEADER.replace(";", "|").encode(),
            CsvProblem("header", "columns are separated by nothing; separate them with ; or ,"),
        ),
        (
            (HEADER + ";resident.naïve\n").encode("latin-1"),
            CsvProblem("file", "not UTF-8; save the file as UTF-8"),
        ),
        (
            f"{HEADER}\r{LINE}\r".encode(),
            CsvProblem("file", "lines end in a lone carriage return; use LF or CRLF"),
        ),
    ],
)
def test_a_file_that_cannot_be_read_is_refused(text: bytes, problem: CsvProblem) -> None:
    assert refusal(text) == [problem]


def test_a_refusal_is_a_hub_error_that_lists_its_problems() -> None:
    with pytest.raises(CsvRefused, match="header: required column 'report_date' is missing"):
        CsvReader(WVGGZ, lines_of(HEADER.replace(";report_date", "") + "\n"))


# --- the layout, the docs and the examples -----------------------------------------


def test_columns_follow_the_model() -> None:
    layout = {c.name: c for c in columns(DEBT)}
    assert list(layout)[:3] == ["partner_event_id", "resident.name", "resident.birth_date"]
    assert layout["resident.birth_date"].required
    assert layout["resident.birth_date"].kind is ColumnKind.DATE
    assert not layout["resident.bsn"].required
    assert layout["crisis"].kind is ColumnKind.BOOLEAN
    assert layout["amount_eur"].description == "Arrear in whole euros."
    assert not layout["missed_payments"].required
    assert layout["missed_payments"].kind is ColumnKind.INTEGER
    assert "EVICTION" in layout["crisis_kind"].choices
    handover = {c.name: c for c in columns(EventType.STREETTRIAGE_HANDOVER)}
    assert handover["problem_areas"].kind is ColumnKind.LIST
    assert "FINANCES" in handover["problem_areas"].choices


def documented_tables() -> dict[str, list[tuple[str, bool]]]:
    """docs/uploads.md: per `### \\`type\\`` heading, the table's (column, required) rows."""
    tables: dict[str, list[tuple[str, bool]]] = {}
    current: list[tuple[str, bool]] | None = None
    for line in (DOCS / "uploads.md").read_text(encoding="utf-8").splitlines():
        if heading := re.fullmatch(r"### `([a-z-]+)`", line):
            current = tables.setdefault(heading[1], [])
        elif line.startswith("## "):
            current = None
        elif current is not None and (cells := re.match(r"\| `([^`]+)` \| (yes|no) \|", line)):
            current.append((cells[1], cells[2] == "yes"))
    return tables


def test_the_documented_tables_list_exactly_the_columns_of_each_type() -> None:
    tables = documented_tables()
    assert set(tables) == {t.value for t in EventType}
    for event_type in EventType:
        expected = [(c.name, c.required) for c in columns(event_type)]
        assert tables[event_type.value] == expected, event_type


@pytest.mark.parametrize("event_type", list(EventType))
def test_the_example_file_reads_and_every_row_is_valid(event_type: EventType) -> None:
    with (DOCS / "examples" / f"{event_type}.csv").open("rb") as file:
        reader = CsvReader(event_type, file)
        assert reader.delimiter == ";"
        rows = list(reader)
    assert 3 <= len(rows) <= 5
    for row in rows:
        assert row.problems == [], row.line
        MODELS[event_type].model_validate(row.data)


# --- writing and reading back ----------------------------------------------------------

# Delimiters and quotes that a writer must quote; no line breaks: free text refuses them.
TEXT = st.text(st.sampled_from("abcdeëéçß XYZ;,\"'|-"), min_size=1, max_size=20).filter(
    lambda text: text.strip() != ""
)
#: A partner's reference: no spaces, delimiters or quotes, but the punctuation it may have.
REFERENCE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/#-]{0,19}", fullmatch=True)
PAST = st.dates(dt.date(1900, 1, 1), dt.date(2025, 1, 1))
COMMON = st.fixed_dictionaries(
    {
        "partner_event_id": REFERENCE,
        "resident": st.fixed_dictionaries(
            {"name": TEXT, "birth_date": PAST},
            optional={"bsn": st.just("999990019"), "phone": st.just("+31 6 0000 0000")},
        ),
        "address": st.fixed_dictionaries(
            {
                "street": TEXT.map(lambda text: text.replace("\n", " ")),
                "house_number": st.integers(1, 99999),
                "postcode": st.sampled_from(["7511AB", "7551 ab", "7607XY"]),
                "city": st.just("Enschede"),
            },
            optional={
                "house_letter": st.sampled_from("aBz"),
                "house_number_addition": st.sampled_from(["II", "hs", "3"]),
            },
        ),
        "municipality_code": st.just("GM0153"),
    },
    optional={"wijk_code": st.just("WK015307")},
)


@st.composite
def debt_signals(draw: st.DrawFn) -> PartnerEvent:
    start, signal = sorted(draw(st.lists(PAST, min_size=2, max_size=2)))
    crisis = draw(st.booleans())
    return MODELS[DEBT].model_validate(
        draw(COMMON)
        | {
            "creditor_type": draw(st.sampled_from(["HUUR", "ENERGIE", "ZORG"])),
            "creditor_name": draw(TEXT),
            "amount_eur": draw(st.integers(1, 10_000_000)),
            "arrear_start_date": start,
            "signal_date": signal,
            "crisis": crisis,
            "crisis_kind": draw(st.sampled_from(["EVICTION", None])) if crisis else None,
            "warm_handover": draw(st.booleans()),
            "missed_payments": draw(st.none() | st.integers(1, 600)),
        }
    )


@st.composite
def handovers(draw: st.DrawFn) -> PartnerEvent:
    areas = st.lists(st.sampled_from(["FINANCES", "HOUSING", "OTHER"]), unique=True)
    return MODELS[EventType.STREETTRIAGE_HANDOVER].model_validate(
        draw(COMMON)
        | {"handover_date": draw(PAST), "outcome": "REFERRED_TO_GP", "problem_areas": draw(areas)}
    )


def round_trip(
    event_type: EventType, events: list[PartnerEvent], delimiter: str, dutch_dates: bool
) -> list[PartnerEvent]:
    text = "".join(write_csv(event_type, events, delimiter=delimiter, dutch_dates=dutch_dates))
    read_back = []
    for row in CsvReader(event_type, lines_of(text)):
        assert row.problems == []
        read_back.append(MODELS[event_type].model_validate(row.data))
    return read_back


@settings(max_examples=60, deadline=None)
@given(
    st.lists(debt_signals(), min_size=1, max_size=4),
    st.sampled_from([";", ","]),
    st.booleans(),
)
def test_a_written_debt_signal_file_reads_back_to_the_same_events(
    events: list[PartnerEvent], delimiter: str, dutch_dates: bool
) -> None:
    assert round_trip(DEBT, events, delimiter, dutch_dates) == events


@settings(max_examples=30, deadline=None)
@given(st.lists(handovers(), min_size=1, max_size=4), st.sampled_from([";", ","]))
def test_a_written_handover_file_reads_back_to_the_same_events(
    events: list[PartnerEvent], delimiter: str
) -> None:
    assert round_trip(EventType.STREETTRIAGE_HANDOVER, events, delimiter, True) == events


def test_write_csv_refuses_an_event_of_another_type() -> None:
    (row,) = read(f"{HEADER}\n{LINE}\n")
    event = MODELS[WVGGZ].model_validate(row.data)
    with pytest.raises(TypeError, match="not a debt-signal event"):
        list(write_csv(DEBT, [event]))


# --- memory ---------------------------------------------------------------------------


def test_a_file_of_100000_rows_is_read_in_flat_memory() -> None:
    rest = LINE.removeprefix("WV-1")

    def generated() -> Iterator[bytes]:  # never a list: the file exists one line at a time
        yield f"{HEADER}\r\n".encode()
        for number in range(100_000):
            yield f"WV-{number}{rest}\r\n".encode()

    tracemalloc.start()
    try:
        count, last = 0, None
        for row in CsvReader(WVGGZ, generated()):
            count += 1
            last = row
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert last is not None and last.data is not None
    assert (last.line, last.data["partner_event_id"]) == (100_001, "WV-99999")
    assert peak < 1024 * 1024, f"peak {peak / 1e6:.1f} MB"  # holding the rows: ~150 MB
