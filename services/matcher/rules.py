"""The baseline correlation rules of the region (DESIGN.md §7).

A rule is a pure function from a household's facts to the ids of the facts that qualify:
the same facts give the same answer whatever order they arrived in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Final

import holidays

from services.matcher.facts import Fact
from services.shared.errors import ConfigurationError
from services.shared.events import DOMAIN_NL
from services.shared.purposes import check_rule


@cache
def _dutch_holidays(year: int) -> holidays.HolidayBase:
    """Public holidays as the Algemene termijnenwet counts them for deadlines.

    The `holidays` package has the national list with Good Friday (which the Termijnenwet
    treats as a holiday) but 5 May only in lustrum years; the Termijnenwet counts it yearly.
    """
    days = holidays.country_holidays("NL", years=year)
    days[dt.date(year, 5, 5)] = "Bevrijdingsdag"
    return days


def is_working_day(day: dt.date) -> bool:
    return day.weekday() < 5 and day not in _dutch_holidays(day.year)


def add_working_days(start: dt.date, days: int) -> dt.date:
    current = start
    while days > 0:
        current += dt.timedelta(days=1)
        if is_working_day(current):
            days -= 1
    return current


@dataclass(frozen=True)
class Deadline:
    amount: int
    working_days: bool

    def due(self, start: dt.date) -> dt.date:
        if self.working_days:
            return add_working_days(start, self.amount)
        return start + dt.timedelta(days=self.amount)

    def describe(self) -> str:
        if self.working_days:
            return f"{self.amount} werkdagen"
        if self.amount % 7 == 0:
            return f"{self.amount // 7} weken"
        return f"{self.amount} dagen"


@dataclass(frozen=True)
class Rule:
    """Common declaration of a rule: what it is for, on which legal basis, from which sources."""

    id: str
    version: int
    purpose: str
    legal_basis: str
    priority: str
    deadline: Deadline
    sources: frozenset[str]
    window_days: int = 0
    cooldown_days: int = 30
    title: str = field(default="")
    #: How domains a team may not see appear in its view: "mention" or "hide" (purpose binding).
    undisclosed_domains: str = "hide"

    def __post_init__(self) -> None:
        check_rule(self.id, self.purpose, self.sources)
        if self.undisclosed_domains not in {"mention", "hide"}:
            raise ConfigurationError(
                f"rule {self.id!r}: undisclosed_domains must be 'mention' or 'hide'"
            )

    def qualifying(self, facts: Sequence[Fact]) -> set[str]:
        raise NotImplementedError

    def deadline_for(self, contributions: Sequence[Fact]) -> Deadline:
        return self.deadline

    def explain(self, contributions: Sequence[Fact]) -> str:
        raise NotImplementedError

    def in_scope(self, facts: Iterable[Fact]) -> list[Fact]:
        return [f for f in facts if f.domain in self.sources]

    def raised_on(self, facts: Sequence[Fact]) -> dt.date:
        """The event date on which the rule first held: the end of the shortest firing prefix."""
        ordered = sorted(self.in_scope(facts), key=Fact.sort_key)
        for end in range(1, len(ordered) + 1):
            if self.qualifying(ordered[:end]):
                return ordered[end - 1].event_date
        raise ValueError(f"rule {self.id} does not hold for these facts")


def _within_window(
    facts: Sequence[Fact], window_days: int, distinct: Callable[[Fact], object], minimum: int
) -> set[str]:
    """Ids of the facts that have, within `window_days` of themselves, facts with at least
    `minimum` distinct values of `distinct` (creditors, domains), counting their own."""
    window = dt.timedelta(days=window_days)
    chosen: set[str] = set()
    for anchor in facts:
        near = [f for f in facts if abs(f.event_date - anchor.event_date) <= window]
        if len({distinct(f) for f in near}) >= minimum:
            chosen.update(f.event_id for f in near)
    return chosen


def _dates(facts: Sequence[Fact]) -> str:
    return ", ".join(f"{f.event_date:%d-%m-%Y}" for f in sorted(facts, key=Fact.sort_key))


@dataclass(frozen=True)
class TwenteMatch(Rule):
    """Two or more debt signals from different creditors within the window."""

    min_creditors: int = 2

    def qualifying(self, facts: Sequence[Fact]) -> set[str]:
        debts = [f for f in self.in_scope(facts) if f.creditor is not None]
        return _within_window(debts, self.window_days, lambda f: f.creditor, self.min_creditors)

    def explain(self, contributions: Sequence[Fact]) -> str:
        creditors = sorted({(f.creditor_type or "OVERIGE") for f in contributions})
        return (
            f"{len(contributions)} betalingsachterstanden bij "
            f"{len({f.creditor for f in contributions})} verschillende schuldeisers "
            f"({', '.join(c.replace('_', ' ').lower() for c in creditors)}) binnen "
            f"{self.window_days} dagen, gemeld op {_dates(contributions)}. "
            f"Dit is een Twente-match: huisbezoek aanbieden."
        )


@dataclass(frozen=True)
class DebtCrisis(Rule):
    """A debt signal with the crisis flag: eviction or a cut-off is imminent."""

    def qualifying(self, facts: Sequence[Fact]) -> set[str]:
        return {f.event_id for f in self.in_scope(facts) if f.crisis}

    def explain(self, contributions: Sequence[Fact]) -> str:
        creditors = sorted(
            {(f.creditor_type or "OVERIGE").replace("_", " ").lower() for f in contributions}
        )
        return (
            f"Schuldeiser ({', '.join(creditors)}) meldt dreigende huisuitzetting of afsluiting, "
            f"gemeld op {_dates(contributions)}. Eerste gesprek binnen 3 werkdagen (Wgs art. 4)."
        )


@dataclass(frozen=True)
class MultiDomain(Rule):
    """Events from two or more different domains within the window."""

    min_domains: int = 2
    #: Wvggz art. 5:2: the exploratory investigation is due within 14 days of a report.
    wvggz_deadline: Deadline = Deadline(14, working_days=False)

    def qualifying(self, facts: Sequence[Fact]) -> set[str]:
        return _within_window(
            self.in_scope(facts), self.window_days, lambda f: f.domain, self.min_domains
        )

    def deadline_for(self, contributions: Sequence[Fact]) -> Deadline:
        if any(f.domain == "wvggz" for f in contributions):
            return self.wvggz_deadline
        return self.deadline

    def explain(self, contributions: Sequence[Fact]) -> str:
        domains = sorted({f.domain for f in contributions})
        return (
            f"Signalen uit {len(domains)} domeinen ({', '.join(DOMAIN_NL[d] for d in domains)}) "
            f"binnen {self.window_days} dagen, gemeld op {_dates(contributions)}. "
            f"Integrale aanpak door het wijkteam aangewezen."
        )


BASELINE_RULES: Final[tuple[Rule, ...]] = (
    TwenteMatch(
        id="twente-match",
        version=1,
        title="Twente-match",
        purpose="debt-help",
        legal_basis="Wgs art. 3 en 4 (vroegsignalering schulden)",
        priority="NORMAL",
        deadline=Deadline(28, working_days=False),
        sources=frozenset({"debt"}),
        window_days=90,
    ),
    DebtCrisis(
        id="debt-crisis",
        version=1,
        title="Dreigende crisis",
        purpose="debt-help",
        legal_basis="Wgs art. 4 (vroegsignalering schulden, crisis)",
        priority="URGENT",
        deadline=Deadline(3, working_days=True),
        sources=frozenset({"debt"}),
    ),
    MultiDomain(
        id="multi-domain",
        version=1,
        title="Meervoudige problematiek",
        purpose="integrated-approach",
        legal_basis="Regionaal convenant Twente, integrale aanpak multiproblematiek",
        priority="HIGH",
        deadline=Deadline(28, working_days=False),
        sources=frozenset({"debt", "wvggz", "streettriage", "care"}),
        window_days=180,
        undisclosed_domains="mention",
    ),
)
