"""The backtest report: its counts, its JSON, its terminal tables and its chart."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from services.backtest.plot import draw, write_plot
from services.backtest.report import Comparison, Report, month_span, render

RULES_V1 = ["twente-match", "debt-crisis", "multi-domain"]
RULES_V2 = ["twente-match", "debt-crisis", "income-drop"]
# Pseudonyms that cannot turn up by accident in a table of counts.
HH_A, HH_B, HH_C, HH_D = "hh-a1f9c0de", "hh-b27e4411", "hh-c3d08f5a", "hh-d4e19b77"


def alert(
    alert_id: str, household: str, rule: str, day: dt.date, place: str = "GM0153"
) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "household_id": household,
        "rule_id": rule,
        "municipality_code": place,
        "raised_on": day,
        "priority": "NORMAL",
        "domains": ["debt"],
    }


# Household A: twente-match twice (two episodes) and debt-crisis; B only twente-match;
# C only debt-crisis. No multi-domain alert, no alert in February or March.
A1 = alert("al-7c1e0a01", HH_A, "twente-match", dt.date(2025, 1, 15))
A2 = alert("al-7c1e0a02", HH_B, "twente-match", dt.date(2025, 1, 20), "GM0164")
A3 = alert("al-7c1e0a03", HH_A, "debt-crisis", dt.date(2025, 4, 2))
A4 = alert("al-7c1e0a04", HH_C, "debt-crisis", dt.date(2025, 4, 30), "GM0141")
A5 = alert("al-7c1e0a05", HH_A, "twente-match", dt.date(2025, 4, 10))
# Only under v2: a twente-match for D in May and the new rule for B in March.
A6 = alert("al-7c1e0a06", HH_D, "twente-match", dt.date(2025, 5, 3))
A7 = alert("al-7c1e0a07", HH_B, "income-drop", dt.date(2025, 3, 1))
V1_ALERTS = [A1, A2, A3, A4, A5]
V2_ALERTS = [A1, A3, A5, A6, A7]
EVERY_ALERT = [A1, A2, A3, A4, A5, A6, A7]


def v1(alerts: list[dict[str, Any]] = V1_ALERTS, seconds: float = 2.0) -> Report:
    return Report.from_alerts(
        alerts, ruleset="baseline v1", rule_ids=RULES_V1, events=1000, seconds=seconds
    )


def v2() -> Report:
    return Report.from_alerts(
        V2_ALERTS, ruleset="baseline v2", rule_ids=RULES_V2, events=1000, seconds=4.0
    )


def rendered(report: Report, comparison: Comparison | None = None) -> str:
    console = Console(record=True, width=120, file=io.StringIO())
    render(report, console, comparison)
    return console.export_text()


def rows(text: str) -> list[list[str]]:
    """The cells of every table row in rich's text output."""
    lines = [line.strip() for line in text.splitlines()]
    return [[c.strip() for c in line[1:-1].split("│")] for line in lines if line[:1] == "│"]


def test_counts_per_rule_including_a_rule_without_alerts() -> None:
    report = v1()
    assert report.total == 5
    assert dict(report.per_rule) == {"twente-match": 3, "debt-crisis": 2, "multi-domain": 0}
    assert dict(report.households) == {"twente-match": 2, "debt-crisis": 2, "multi-domain": 0}
    assert report.households_total == 3


def test_months_are_zero_filled_between_first_and_last() -> None:
    report = v1()
    assert report.months == ("2025-01", "2025-02", "2025-03", "2025-04")
    assert dict(report.per_month["twente-match"]) == {
        "2025-01": 2,
        "2025-02": 0,
        "2025-03": 0,
        "2025-04": 1,
    }
    assert set(report.per_month["multi-domain"].values()) == {0}


def test_month_span_crosses_a_year() -> None:
    assert month_span(["2025-02", "2024-11"]) == ("2024-11", "2024-12", "2025-01", "2025-02")
    assert month_span([]) == ()


def test_counts_per_municipality() -> None:
    report = v1()
    assert report.per_municipality["twente-match"]["GM0153"] == 2
    assert report.per_municipality["twente-match"]["GM0164"] == 1
    assert report.per_municipality["debt-crisis"]["GM0141"] == 1
    assert len(report.municipalities) == 14
    outside = v1([alert("al-x", HH_A, "debt-crisis", dt.date(2025, 1, 1), "GM0363")])
    assert outside.municipalities[-1] == "GM0363"
    assert outside.per_municipality["debt-crisis"]["GM0363"] == 1


def test_overlap_between_rules() -> None:
    report = v1()
    assert dict(report.overlap) == {
        ("twente-match", "debt-crisis"): 1,
        ("twente-match", "multi-domain"): 0,
        ("debt-crisis", "multi-domain"): 0,
    }
    assert dict(report.households_only) == {
        "twente-match": 1,
        "debt-crisis": 1,
        "multi-domain": 0,
    }


def test_a_later_version_of_an_alert_replaces_the_earlier() -> None:
    moved = {**A4, "raised_on": dt.date(2025, 6, 1), "municipality_code": "GM0189"}
    report = v1([*V1_ALERTS, moved])
    assert report.per_rule["debt-crisis"] == 2
    assert report.per_month["debt-crisis"]["2025-06"] == 1
    assert report.per_municipality["debt-crisis"]["GM0141"] == 0


def test_alert_of_a_rule_outside_the_file_is_refused() -> None:
    with pytest.raises(ValueError, match="income-drop"):
        v1([A7])


def test_events_per_second() -> None:
    assert v1().events_per_second == 500.0
    assert v1(seconds=0.0).events_per_second is None
    assert v1(seconds=0.0).to_json()["events_per_second"] is None


def test_comparison_per_rule() -> None:
    comparison = Comparison.between(v1(), v2())
    by_rule = {r.rule_id: r for r in comparison.rules}
    assert list(by_rule) == ["twente-match", "debt-crisis", "multi-domain", "income-drop"]
    match = by_rule["twente-match"]
    assert (match.base, match.other, match.both, match.only_base, match.only_other) == (
        3,
        3,
        2,
        1,
        1,
    )
    assert (match.households_only_base, match.households_only_other) == (1, 1)
    crisis = by_rule["debt-crisis"]
    assert (crisis.base, crisis.other, crisis.both, crisis.only_base, crisis.only_other) == (
        2,
        1,
        1,
        1,
        0,
    )
    assert (crisis.households_only_base, crisis.households_only_other) == (1, 0)
    assert comparison.totals() == {
        "base": 5,
        "other": 5,
        "both": 3,
        "only_base": 2,
        "only_other": 2,
    }


def test_comparison_marks_rules_of_one_file() -> None:
    by_rule = {r.rule_id: r for r in Comparison.between(v1(), v2()).rules}
    assert by_rule["twente-match"].present_in == "both"
    assert by_rule["multi-domain"].present_in == "base"
    drop = by_rule["income-drop"]
    assert drop.present_in == "other"
    assert (drop.base, drop.other, drop.only_other, drop.households_only_other) == (0, 1, 1, 1)


def test_comparison_month_difference_spans_both_reports() -> None:
    comparison = Comparison.between(v1(), v2())
    assert comparison.months == ("2025-01", "2025-02", "2025-03", "2025-04", "2025-05")
    by_rule = {r.rule_id: r for r in comparison.rules}
    assert list(by_rule["twente-match"].per_month.values()) == [-1, 0, 0, 0, 1]
    assert list(by_rule["debt-crisis"].per_month.values()) == [0, 0, 0, -1, 0]
    assert list(by_rule["income-drop"].per_month.values()) == [0, 0, 1, 0, 0]


def test_json_round_trips_and_keeps_the_rule_order() -> None:
    for data in (v1().to_json(), Comparison.between(v1(), v2()).to_json()):
        assert json.loads(json.dumps(data)) == data
    data = v1().to_json()
    assert list(data["rules"]) == RULES_V1
    assert data["rules"]["twente-match"]["per_month"]["2025-02"] == 0
    assert data["rules"]["debt-crisis"]["per_municipality"]["GM0141"] == 1
    assert data["overlap"][0] == {"rules": ["twente-match", "debt-crisis"], "households": 1}
    assert data["events_per_second"] == 500.0


@settings(max_examples=25, deadline=None)
@given(st.permutations(V1_ALERTS))
def test_alert_order_does_not_change_the_json(alerts: list[dict[str, Any]]) -> None:
    assert json.dumps(v1(alerts).to_json()) == json.dumps(v1().to_json())


def test_no_pseudonym_leaves_as_text() -> None:
    base, other = v1(), v2()
    comparison = Comparison.between(base, other)
    texts = [
        rendered(base, comparison),
        json.dumps(base.to_json()),
        json.dumps(comparison.to_json()),
        repr(base),
        repr(comparison),
    ]
    for text in texts:
        for record in EVERY_ALERT:
            assert record["alert_id"] not in text
            assert record["household_id"] not in text


def test_render_shows_the_counts() -> None:
    cells = rows(rendered(v1()))
    assert ["events per second", "500"] in cells
    assert ["twente-match", "3", "2", "1"] in cells
    assert ["multi-domain", "0", "0", "0"] in cells
    assert ["total", "5", "3", ""] in cells
    assert ["Enschede", "2", "1", "0", "3"] in cells
    assert ["Hengelo (O.)", "1", "0", "0", "1"] in cells
    assert ["Tubbergen", "0", "0", "0", "0"] in cells
    assert ["2025-02", "0", "0", "0", "0"] in cells
    assert ["2025-04", "1", "2", "0", "3"] in cells
    assert ["twente-match", "debt-crisis", "1"] in cells


def test_render_shows_the_comparison() -> None:
    base, other = v1(), v2()
    text = rendered(base, Comparison.between(base, other))
    cells = rows(text)
    assert ["twente-match", "both", "3", "3", "2", "1", "1", "1", "1"] in cells
    assert ["multi-domain", "base only", "0", "0", "0", "0", "0", "0", "0"] in cells
    assert ["income-drop", "other only", "0", "1", "0", "0", "1", "0", "1"] in cells
    assert ["2025-01", "-1", "0", "0", "0"] in cells
    assert ["2025-05", "+1", "0", "0", "0"] in cells
    assert "base = baseline v1, other = baseline v2" in text


def test_render_of_a_year_without_alerts() -> None:
    report = Report.from_alerts([], ruleset="r [draft]", rule_ids=["a"], events=0, seconds=0.0)
    text = rendered(report)
    assert "Backtest of r [draft]" in text
    assert ["events per second", "-"] in rows(text)
    assert ["a", "0", "0", "0"] in rows(text)


def test_chart_draws_the_other_rule_file_dashed_in_the_same_colours() -> None:
    figure = draw(v1(), v2())
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    solid, dashed = lines["twente-match (baseline v1)"], lines["twente-match (baseline v2)"]
    assert (solid.get_linestyle(), dashed.get_linestyle()) == ("-", "--")
    assert solid.get_color() == dashed.get_color()
    assert lines["debt-crisis (baseline v1)"].get_color() != solid.get_color()
    assert numpy.asarray(solid.get_ydata()).tolist() == [2, 0, 0, 1, 0]
    assert numpy.asarray(dashed.get_ydata()).tolist() == [1, 0, 0, 1, 1]
    assert "income-drop (baseline v2)" in lines
    assert "baseline v1" in figure.axes[0].get_title()


@pytest.mark.parametrize("other", [None, "v2"])
def test_write_plot_writes_a_png(tmp_path: Path, other: str | None) -> None:
    import matplotlib.image

    path = tmp_path / "backtest.png"
    write_plot(v1(), path, v2() if other else None)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] >= 400
    assert image.shape[1] >= 800
    assert image.min() < image.max()


def test_write_plot_of_a_year_without_alerts(tmp_path: Path) -> None:
    report = Report.from_alerts([], ruleset="r", rule_ids=["a"], events=0, seconds=0.0)
    path = tmp_path / "empty.png"
    write_plot(report, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
