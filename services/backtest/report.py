"""What a backtest found: alerts per rule, place, month and household; how two rule files differ.

The replay hands over its alert records; this module only counts. Household pseudonyms and
alert ids are kept (so two reports can be compared) but never leave as text: not in `repr`,
not in `to_json`, not in `render`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from services.shared.region import MUNICIPALITIES

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

K = TypeVar("K")
V = TypeVar("V")

#: Where a rule id of a comparison is defined: in both rule files or in one of them.
Presence = Literal["both", "base", "other"]

_NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Report:
    """The counts of one backtest. Build it with `Report.from_alerts`.

    Rules appear in the order of the rules file, months in calendar order with every month
    between the first and the last alert, municipalities in region order (all 14, then any
    code from outside the region), so tables and charts line up without gaps.
    """

    ruleset: str
    rule_ids: tuple[str, ...]
    events: int
    seconds: float
    total: int
    households_total: int
    months: tuple[str, ...]
    municipalities: tuple[str, ...]
    per_rule: Mapping[str, int]
    per_municipality: Mapping[str, Mapping[str, int]]
    per_month: Mapping[str, Mapping[str, int]]
    households: Mapping[str, int]
    households_only: Mapping[str, int]
    overlap: Mapping[tuple[str, str], int]
    # Pseudonyms: kept for `Comparison.between`, hidden from repr so a log line cannot leak them.
    alert_ids: Mapping[str, frozenset[str]] = field(repr=False)
    household_ids: Mapping[str, frozenset[str]] = field(repr=False)

    @classmethod
    def from_alerts(
        cls,
        alerts: Iterable[Mapping[str, Any]],
        *,
        ruleset: str,
        rule_ids: Sequence[str],
        events: int,
        seconds: float,
    ) -> Report:
        """Counts the alerts; a record whose `alert_id` was seen before replaces it.

        Replacing means that passing every published version of an alert counts it once,
        with the municipality and date of its last version. An alert of a rule that is not
        in `rule_ids` is a bug in the replay and raises `ValueError`.
        """
        rules = tuple(dict.fromkeys(rule_ids))
        records = list({a["alert_id"]: a for a in alerts}.values())
        _refuse_unknown_rules(records, rules, ruleset)
        by_rule = {rule: [a for a in records if a["rule_id"] == rule] for rule in rules}
        months = month_span(_month(a["raised_on"]) for a in records)
        places = _places(a["municipality_code"] for a in records)
        households = {rule: frozenset(a["household_id"] for a in by_rule[rule]) for rule in rules}
        return cls(
            ruleset=ruleset,
            rule_ids=rules,
            events=events,
            seconds=seconds,
            total=len(records),
            households_total=len(_NOTHING.union(*households.values())),
            months=months,
            municipalities=places,
            per_rule=_frozen({rule: len(by_rule[rule]) for rule in rules}),
            per_municipality=_frozen(
                {
                    rule: _tally((a["municipality_code"] for a in by_rule[rule]), places)
                    for rule in rules
                }
            ),
            per_month=_frozen(
                {
                    rule: _tally((_month(a["raised_on"]) for a in by_rule[rule]), months)
                    for rule in rules
                }
            ),
            households=_frozen({rule: len(households[rule]) for rule in rules}),
            households_only=_frozen(_households_only(households)),
            overlap=_frozen(
                {(a, b): len(households[a] & households[b]) for a, b in combinations(rules, 2)}
            ),
            alert_ids=_frozen(
                {rule: frozenset(a["alert_id"] for a in by_rule[rule]) for rule in rules}
            ),
            household_ids=_frozen(households),
        )

    @property
    def events_per_second(self) -> float | None:
        """Replay speed; None when no time was measured rather than a division by zero."""
        return self.events / self.seconds if self.seconds > 0 else None

    def to_json(self) -> dict[str, Any]:
        """The counts as JSON-ready data for `--json`; no pseudonyms, key order fixed."""
        return {
            "ruleset": self.ruleset,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_second": _rounded(self.events_per_second),
            "alerts": self.total,
            "households": self.households_total,
            "months": list(self.months),
            "rules": {rule: self._rule_json(rule) for rule in self.rule_ids},
            "overlap": [
                {"rules": [a, b], "households": count} for (a, b), count in self.overlap.items()
            ],
        }

    def _rule_json(self, rule: str) -> dict[str, Any]:
        return {
            "alerts": self.per_rule[rule],
            "households": self.households[rule],
            "households_only_this_rule": self.households_only[rule],
            "per_municipality": dict(self.per_municipality[rule]),
            "per_month": dict(self.per_month[rule]),
        }


@dataclass(frozen=True)
class RuleDifference:
    """One rule in two backtests; alerts are the same alert when their `alert_id` is equal.

    Alert ids are derived from household, rule and episode number, so a rule change that
    splits or merges a household's episodes shows up as alerts only in base and only in other.
    """

    rule_id: str
    present_in: Presence
    base: int
    other: int
    both: int
    only_base: int
    only_other: int
    households_only_base: int
    households_only_other: int
    #: Month -> alerts in other minus alerts in base.
    per_month: Mapping[str, int]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready counts of this rule."""
        return {
            "present_in": self.present_in,
            "alerts": {
                "base": self.base,
                "other": self.other,
                "both": self.both,
                "only_base": self.only_base,
                "only_other": self.only_other,
            },
            "households": {
                "only_base": self.households_only_base,
                "only_other": self.households_only_other,
            },
            "per_month_difference": dict(self.per_month),
        }


@dataclass(frozen=True)
class Comparison:
    """Two backtests of the same events with different rule files, rule by rule."""

    base_ruleset: str
    other_ruleset: str
    months: tuple[str, ...]
    rules: tuple[RuleDifference, ...]

    @classmethod
    def between(cls, base: Report, other: Report) -> Comparison:
        """Compares every rule of either file; base's rules first, then other's new ones."""
        months = month_span([*base.months, *other.months])
        rule_ids = dict.fromkeys([*base.rule_ids, *other.rule_ids])
        return cls(
            base_ruleset=base.ruleset,
            other_ruleset=other.ruleset,
            months=months,
            rules=tuple(_difference(rule, base, other, months) for rule in rule_ids),
        )

    def totals(self) -> dict[str, int]:
        """Alert counts over all rules; alerts of different rules never share an id."""
        return {
            "base": sum(r.base for r in self.rules),
            "other": sum(r.other for r in self.rules),
            "both": sum(r.both for r in self.rules),
            "only_base": sum(r.only_base for r in self.rules),
            "only_other": sum(r.only_other for r in self.rules),
        }

    def to_json(self) -> dict[str, Any]:
        """The comparison as JSON-ready data for `--json`; no pseudonyms, key order fixed."""
        return {
            "base": self.base_ruleset,
            "other": self.other_ruleset,
            "months": list(self.months),
            "alerts": self.totals(),
            "rules": {r.rule_id: r.to_json() for r in self.rules},
        }


def month_span(months: Iterable[str]) -> tuple[str, ...]:
    """Every "YYYY-MM" from the earliest to the latest given, so a chart has no gaps."""
    indices = [_month_index(m) for m in months]
    if not indices:
        return ()
    return tuple(_month_label(i) for i in range(min(indices), max(indices) + 1))


def render(report: Report, console: Console, comparison: Comparison | None = None) -> None:
    """Prints the report (and the comparison) as tables of counts, never an id.

    Municipalities are named as in `services.shared.region`; the comparison's own report
    is not printed, call `render` for it as well when it is wanted.
    """
    console.print(_summary_table(report), _rules_table(report))
    console.print(_places_table(report), _months_table(report))
    if len(report.rule_ids) > 1:
        console.print(_overlap_table(report))
    if comparison is not None:
        console.print(_comparison_table(comparison), _difference_table(comparison))


def _refuse_unknown_rules(
    records: Sequence[Mapping[str, Any]], rules: tuple[str, ...], ruleset: str
) -> None:
    unknown = sorted({a["rule_id"] for a in records} - set(rules))
    if unknown:
        raise ValueError(f"alerts of rules that {ruleset} does not define: {', '.join(unknown)}")


def _month(day: dt.date) -> str:
    # The replay promises dates; anything else (an ISO string from JSON) is a bug upstream.
    if not isinstance(day, dt.date):
        raise TypeError(f"raised_on must be a datetime.date, not {type(day).__name__}")
    return f"{day.year:04d}-{day.month:02d}"


def _month_index(month: str) -> int:
    year, number = month.split("-")
    return int(year) * 12 + int(number) - 1


def _month_label(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _places(codes: Iterable[str]) -> tuple[str, ...]:
    """All of Twente (a municipality without alerts is news too), then codes from elsewhere."""
    return (*MUNICIPALITIES, *sorted(set(codes) - MUNICIPALITIES.keys()))


def _tally(keys: Iterable[str], order: tuple[str, ...]) -> Mapping[str, int]:
    counts = Counter(keys)
    return _frozen({key: counts[key] for key in order})


def _households_only(households: Mapping[str, frozenset[str]]) -> dict[str, int]:
    """Per rule, the households that no other rule alerted."""
    rules_per_household = Counter(h for members in households.values() for h in members)
    return {
        rule: sum(1 for h in members if rules_per_household[h] == 1)
        for rule, members in households.items()
    }


def _difference(rule: str, base: Report, other: Report, months: tuple[str, ...]) -> RuleDifference:
    base_alerts = base.alert_ids.get(rule, _NOTHING)
    other_alerts = other.alert_ids.get(rule, _NOTHING)
    base_households = base.household_ids.get(rule, _NOTHING)
    other_households = other.household_ids.get(rule, _NOTHING)
    return RuleDifference(
        rule_id=rule,
        present_in=_presence(rule, base, other),
        base=len(base_alerts),
        other=len(other_alerts),
        both=len(base_alerts & other_alerts),
        only_base=len(base_alerts - other_alerts),
        only_other=len(other_alerts - base_alerts),
        households_only_base=len(base_households - other_households),
        households_only_other=len(other_households - base_households),
        per_month=_frozen(
            {m: _in_month(other, rule, m) - _in_month(base, rule, m) for m in months}
        ),
    )


def _presence(rule: str, base: Report, other: Report) -> Presence:
    if rule not in other.per_rule:
        return "base"
    if rule not in base.per_rule:
        return "other"
    return "both"


def _in_month(report: Report, rule: str, month: str) -> int:
    return report.per_month.get(rule, {}).get(month, 0)


def _frozen(mapping: dict[K, V]) -> Mapping[K, V]:
    # A frozen dataclass with plain dicts inside could still be changed under a caller's feet.
    return MappingProxyType(mapping)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# Text output. Rule ids and ruleset names come from a file, so they are escaped: a "[" in a
# name must not be read as rich markup.

_COMPARED = (
    *("base", "other", "both", "only base", "only other"),
    *("households only base", "households only other"),
)
_PRESENCE: Mapping[Presence, str] = {"both": "both", "base": "base only", "other": "other only"}


def _table(
    title: str, text: Sequence[str], numeric: Iterable[str], caption: str | None = None
) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title), caption=escape(caption) if caption else None)
    for header in text:
        table.add_column(escape(header))
    for header in numeric:
        table.add_column(escape(header), justify="right")
    return table


def _row(table: Table, text: Iterable[str], counts: Iterable[int | str]) -> None:
    from rich.markup import escape

    table.add_row(*(escape(t) for t in text), *(str(n) for n in counts))


def _summary_table(report: Report) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"Backtest of {report.ruleset}"), show_header=False)
    table.add_column()
    table.add_column(justify="right")
    rate = report.events_per_second
    table.add_row("events replayed", str(report.events))
    table.add_row("seconds", f"{report.seconds:.1f}")
    table.add_row("events per second", "-" if rate is None else f"{rate:.0f}")
    table.add_row("alerts", str(report.total))
    table.add_row("households with an alert", str(report.households_total))
    if report.months:
        table.add_row("months", f"{report.months[0]} to {report.months[-1]}")
    return table


def _rules_table(report: Report) -> Table:
    table = _table(
        "Alerts per rule", ["rule"], ["alerts", "households", "households only this rule"]
    )
    for rule in report.rule_ids:
        counts = (report.per_rule[rule], report.households[rule], report.households_only[rule])
        _row(table, [rule], counts)
    table.add_section()
    # Households are not summed: a household alerted by two rules is one household.
    _row(table, ["total"], [report.total, report.households_total, ""])
    return table


def _places_table(report: Report) -> Table:
    table = _table("Alerts per municipality", ["municipality"], [*report.rule_ids, "total"])
    for code in report.municipalities:
        counts = [report.per_municipality[rule][code] for rule in report.rule_ids]
        _row(table, [MUNICIPALITIES.get(code, code)], [*counts, sum(counts)])
    return table


def _months_table(report: Report) -> Table:
    table = _table("Alerts per month", ["month"], [*report.rule_ids, "total"])
    for month in report.months:
        counts = [report.per_month[rule][month] for rule in report.rule_ids]
        _row(table, [month], [*counts, sum(counts)])
    return table


def _overlap_table(report: Report) -> Table:
    table = _table("Households alerted by both rules", ["rule", "rule"], ["households"])
    for (a, b), count in report.overlap.items():
        _row(table, [a, b], [count])
    return table


def _comparison_table(comparison: Comparison) -> Table:
    table = _table(
        "Alerts compared",
        ["rule", "in"],
        _COMPARED,
        caption=f"base = {comparison.base_ruleset}, other = {comparison.other_ruleset}",
    )
    for r in comparison.rules:
        counts = (r.base, r.other, r.both, r.only_base, r.only_other)
        households = (r.households_only_base, r.households_only_other)
        _row(table, [r.rule_id, _PRESENCE[r.present_in]], [*counts, *households])
    table.add_section()
    _row(table, ["total", ""], [*comparison.totals().values(), "", ""])
    return table


def _difference_table(comparison: Comparison) -> Table:
    rules = [r.rule_id for r in comparison.rules]
    table = _table("Alerts per month, other minus base", ["month"], rules)
    for month in comparison.months:
        _row(table, [month], [_signed(r.per_month[month]) for r in comparison.rules])
    return table


def _signed(number: int) -> str:
    return f"{number:+d}" if number else "0"
