"""Back-testing: the events file, the replay over processes, and the commands around them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.backtest.events import BATCH_EVENTS, EventsFile, Row, write_events
from services.backtest.replay import replay_file, replay_rows
from services.cli.demo import synthetic_rows
from services.cli.main import app
from services.matcher.ruleset import DEFAULT_RULES_FILE, load_ruleset
from services.shared.errors import DecodeError

RULES = load_ruleset(DEFAULT_RULES_FILE).rules


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    """A tenth of the synthetic year: about 2,200 events, so several batches of a file."""
    return synthetic_rows(seed=7, scale=0.1)


@pytest.fixture(scope="module")
def events_file(rows: list[Row], tmp_path_factory: pytest.TempPathFactory) -> EventsFile:
    path = tmp_path_factory.mktemp("export") / "events.avro"
    with path.open("wb") as stream:
        write_events(stream, rows, {"source": "test"})
    return EventsFile(path)


def test_the_file_holds_every_event_grouped_per_household_in_arrival_order(
    rows: list[Row], events_file: EventsFile
) -> None:
    read = list(events_file.rows())
    # Everything the rules read, and nothing more: which care is district nursing stays out.
    written = [(h, dataclasses.replace(f, health_data=False)) for h, f in rows]
    assert any(f.health_data for _, f in rows)
    assert sorted(read, key=lambda r: r[1].event_id) == sorted(written, key=lambda r: r[1].event_id)
    order: dict[str, list[str]] = {}
    for household_id, fact in rows:
        order.setdefault(household_id, []).append(fact.event_id)
    seen: list[str] = []
    for household_id, _ in read:
        if not seen or seen[-1] != household_id:
            assert household_id not in seen, "a household's events are split"
            seen.append(household_id)
    assert [f.event_id for h in seen for f in (r[1] for r in read if r[0] == h)] == [
        e for h in seen for e in order[h]
    ]
    blocks = events_file.blocks()
    assert len(blocks) > 1 and sum(b.events for b in blocks) == len(rows)
    assert all(b.events >= BATCH_EVENTS for b in blocks[:-1])
    assert events_file.metadata()["source"] == "test"


def test_reading_some_blocks_gives_exactly_their_events(events_file: EventsFile) -> None:
    blocks = events_file.blocks()
    parts = [list(events_file.rows(blocks[i : i + 1])) for i in range(len(blocks))]
    assert [len(p) for p in parts] == [b.events for b in blocks]
    assert [r for p in parts for r in p] == list(events_file.rows())


def test_the_replay_over_processes_gives_the_alerts_of_the_replay_in_order(
    rows: list[Row], events_file: EventsFile
) -> None:
    in_order = replay_rows(RULES, rows)
    parallel = replay_file(RULES, events_file, workers=2, parallel_from=0)
    alone = replay_file(RULES, events_file, workers=1)
    assert in_order.alerts  # the synthetic year raises alerts of every rule
    assert {a["rule_id"] for a in in_order.alerts.values()} == {r.id for r in RULES}
    for replayed in (parallel, alone):
        assert replayed.events == len(rows)
        assert {k: _content(a) for k, a in replayed.alerts.items()} == {
            k: _content(a) for k, a in in_order.alerts.items()
        }


def _content(alert: dict) -> tuple:
    return (alert["rule_id"], alert["raised_on"], alert["deadline"], tuple(alert["event_ids"]))


def test_future_and_resent_events_are_counted_not_correlated(tmp_path: Path) -> None:
    rows = synthetic_rows(seed=3, scale=0.02)
    household, fact = rows[0]
    future = dataclasses.replace(
        fact,
        event_id="from-the-future",
        event_date=fact.received_on + dt.timedelta(days=40),  # type: ignore[operator]
    )
    path = tmp_path / "events.avro"
    with path.open("wb") as stream:
        write_events(stream, rows, {})
    before = replay_file(RULES, EventsFile(path))
    with path.open("wb") as stream:
        write_events(stream, [*rows, (household, fact), (household, future)], {})
    replayed = replay_file(RULES, EventsFile(path))
    assert replayed.events == len(rows) + 2
    assert replayed.duplicates == before.duplicates + 1
    assert replayed.alerts == before.alerts
    assert dict(replayed.rejected) == {"event date lies 40 days after the day it was received": 1}


def test_a_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alerts.avro"
    import fastavro

    with path.open("wb") as stream:
        fastavro.writer(
            stream, {"type": "record", "name": "X", "fields": [{"name": "a", "type": "int"}]}, []
        )
    with pytest.raises(DecodeError, match="not an events export"):
        EventsFile(path).blocks()


runner = CliRunner()


def test_export_backtest_compare_and_plot_from_the_command_line(tmp_path: Path) -> None:
    events = tmp_path / "year.avro"
    exported = runner.invoke(
        app, ["export", "events", str(events), "--synthetic", "--scale", "0.1", "--json"]
    )
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["events"] > 2000
    stricter = tmp_path / "stricter.yaml"
    stricter.write_text(
        DEFAULT_RULES_FILE.read_text().replace("window_days: 90", "window_days: 30"),
        encoding="utf-8",
    )
    chart = tmp_path / "chart.png"
    result = runner.invoke(
        app,
        [
            "backtest",
            "--rules",
            str(stricter),
            "--events",
            str(events),
            "--compare",
            str(DEFAULT_RULES_FILE),
            "--plot",
            str(chart),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    ours, theirs = report["report"], report["compare"]
    counts = report["events"]
    assert counts["read"] == counts["counted"] + counts["duplicates"] + counts["refused"]
    assert counts["counted"] > 2000 and counts["duplicates"] > 0  # the year has re-sends
    # A shorter window can only lose Twente-matches; the other rules do not change.
    assert ours["rules"]["twente-match"]["alerts"] < theirs["rules"]["twente-match"]["alerts"]
    assert ours["rules"]["debt-crisis"]["alerts"] == theirs["rules"]["debt-crisis"]["alerts"]
    twente = report["comparison"]["rules"]["twente-match"]
    assert twente["alerts"]["only_base"] > 0 and twente["alerts"]["only_other"] == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Pseudonyms stay out of the output.
    household = next(EventsFile(events).rows())[0]
    assert household not in result.stdout


def test_backtest_refuses_a_missing_file_and_topic_options_on_a_file(tmp_path: Path) -> None:
    missing = runner.invoke(
        app, ["backtest", "--rules", str(DEFAULT_RULES_FILE), "--events", str(tmp_path / "no")]
    )
    assert missing.exit_code == 2 and "no such" in missing.output
    on_a_file = runner.invoke(
        app,
        [
            *("backtest", "--rules", str(DEFAULT_RULES_FILE)),
            *("--events", str(DEFAULT_RULES_FILE), "--since", "2025-01-01"),
        ],
    )
    assert on_a_file.exit_code == 2 and "only for --events kafka" in on_a_file.output
    not_events = runner.invoke(
        app,
        ["backtest", "--rules", str(DEFAULT_RULES_FILE), "--events", str(DEFAULT_RULES_FILE)],
        env={"COLUMNS": "300"},  # the message on one line
    )
    assert not_events.exit_code == 2 and "not an events file" in not_events.output


def test_a_household_spanning_more_than_a_year_replays_as_the_matcher_forgets(
    tmp_path: Path,
) -> None:
    """A partner's backlog: a signal dated within 90 days of one the matcher has forgotten."""
    household, template = synthetic_rows(seed=5, scale=0.02)[0]
    debt = dataclasses.replace(
        template,
        event_type="debt-signal",
        domain="debt",
        creditor_type="HUUR",
        amount_eur=500,
        crisis=False,
        received_on=dt.date(2025, 3, 1),
    )
    facts = [
        dataclasses.replace(debt, event_id="a", creditor="domijn", event_date=dt.date(2024, 1, 10)),
        dataclasses.replace(debt, event_id="b", creditor="enexis", event_date=dt.date(2025, 2, 1)),
        dataclasses.replace(debt, event_id="c", creditor="vitens", event_date=dt.date(2024, 2, 1)),
    ]
    rows = [(household, f) for f in facts]
    path = tmp_path / "backlog.avro"
    with path.open("wb") as stream:
        write_events(stream, rows, {})
    live = replay_rows(RULES, rows)
    assert {a["rule_id"] for a in live.alerts.values()} == set()  # "a" was forgotten
    assert replay_file(RULES, EventsFile(path)).alerts == live.alerts
