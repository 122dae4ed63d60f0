"""What a correlation rule means: one implementation, used by the matcher and by back-testing.

Rules are data (`rules/*.yaml`, read by `services.matcher.ruleset`); this module holds the
semantics every rule shares. A rule picks the household's facts it may read (its sources and
filters), and holds when some window of `window_days` days, starting on a fact's event
date, holds enough facts: events, distinct creditors, distinct domains. The facts that
qualify are the union of those windows. Adding a fact can only add qualifying facts (the
condition is monotone), so the same facts give the same answer whatever order they arrived in.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property

import holidays

from services.matcher.facts import Fact
from services.shared.errors import ConfigurationError
from services.shared.events import DOMAIN_NL
from services.shared.purposes import PURPOSES, check_rule


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


@cache
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
    #: Why this deadline applies ("Wvggz art. 5:2"), for the rules file's readers. Alerts do
    #: not carry it: it would tell a team that may not see Wvggz reports that one exists.
    because: str = ""

    def due(self, start: dt.date) -> dt.date:
        if self.working_days:
            return add_working_days(start, self.amount)
        return start + dt.timedelta(days=self.amount)

    def describe(self) -> str:
        if self.working_days:
            return f"{self.amount} werkdag{'en' if self.amount != 1 else ''}"
        if self.amount % 7 == 0:
            return f"{self.amount // 7} {'weken' if self.amount != 7 else 'week'}"
        return f"{self.amount} dag{'en' if self.amount != 1 else ''}"


@dataclass(frozen=True)
class DeadlineWhen:
    """A deadline that replaces the rule's own when a domain contributes (Wvggz 5:2)."""

    domain: str
    deadline: Deadline


@dataclass(frozen=True)
class Filter:
    """Which of a household's facts a rule reads. Empty means no restriction."""

    event_types: frozenset[str] = frozenset()
    creditor_types: frozenset[str] = frozenset()
    min_amount_eur: int | None = None
    crisis: bool | None = None

    @cached_property
    def everything(self) -> bool:
        return not (
            self.event_types or self.creditor_types or self.min_amount_eur is not None
        ) and (self.crisis is None)

    def admits(self, fact: Fact) -> bool:
        if self.everything:
            return True
        if self.event_types and fact.event_type not in self.event_types:
            return False
        if self.creditor_types and fact.creditor_type not in self.creditor_types:
            return False
        if self.min_amount_eur is not None and (fact.amount_eur or 0) < self.min_amount_eur:
            return False
        return self.crisis is None or fact.crisis == self.crisis


@dataclass(frozen=True)
class Condition:
    """How many facts, creditors and domains must lie within the window of one fact."""

    window_days: int = 0
    min_events: int = 1
    min_creditors: int = 0
    min_domains: int = 0

    def holds(self, near: Sequence[Fact]) -> bool:
        if len(near) < self.min_events:
            return False
        if self.min_creditors and len(_distinct(near, _creditor)) < self.min_creditors:
            return False
        return not self.min_domains or len(_distinct(near, _domain)) >= self.min_domains


def _creditor(fact: Fact) -> str | None:
    return fact.creditor


def _domain(fact: Fact) -> str | None:
    return fact.domain


def _distinct(facts: Sequence[Fact], key: Callable[[Fact], str | None]) -> set[str]:
    return {value for f in facts if (value := key(f)) is not None}


@dataclass(frozen=True)
class Rule:
    id: str
    version: int
    title: str
    purpose: str
    legal_basis: str
    priority: str
    #: The source domains the rule may read; checked against its purpose (Wgs art. 8b).
    sources: frozenset[str]
    condition: Condition
    deadline: Deadline
    deadline_when: tuple[DeadlineWhen, ...] = ()
    filter: Filter = field(default_factory=Filter)
    cooldown_days: int = 30
    #: How domains a team may not see appear in its view: "mention" or "hide" (purpose binding).
    undisclosed_domains: str = "hide"
    #: Dutch text for the worker, with the placeholders of `explain`.
    explanation: str = ""

    def __post_init__(self) -> None:
        check_rule(self.id, self.purpose, self.sources)
        if self.undisclosed_domains not in {"mention", "hide"}:
            raise ConfigurationError(
                f"rule {self.id!r}: undisclosed_domains must be 'mention' or 'hide'"
            )

    def reads(self, fact: Fact) -> bool:
        return fact.domain in self.sources and self.filter.admits(fact)

    @cached_property
    def reads_everything(self) -> bool:
        return self.filter.everything and self.sources >= set(DOMAIN_NL)

    def in_scope(self, facts: Collection[Fact]) -> list[Fact]:
        """The facts this rule reads, in event-date order."""
        if self.reads_everything:
            return sorted(facts, key=Fact.sort_key)
        return sorted((f for f in facts if self.reads(f)), key=Fact.sort_key)

    def qualifying(self, facts: Collection[Fact]) -> list[Fact]:
        """The facts that make the rule hold, in event-date order; empty when it does not."""
        if len(facts) < self.condition.min_events:
            return []  # the common case (one event per household), answered without sorting
        return self._qualifying(self.in_scope(facts))

    def _qualifying(self, ordered: Sequence[Fact]) -> list[Fact]:
        condition = self.condition
        # Holding is monotone: if all the facts together do not hold, no window of them does;
        # if they all lie within one window, that window is the answer.
        if not condition.holds(ordered):
            return []
        window = dt.timedelta(days=condition.window_days)
        if ordered[-1].event_date - ordered[0].event_date <= window:
            return list(ordered)
        dates = [f.event_date for f in ordered]
        chosen = [False] * len(ordered)
        # Each window starts at a fact's date and lasts `window_days`: the facts it holds lie
        # within that many days of each other, as "binnen 90 dagen" says.
        for start in sorted(set(dates)):
            low = bisect.bisect_left(dates, start)
            high = bisect.bisect_right(dates, start + window)
            if condition.holds(ordered[low:high]):
                chosen[low:high] = [True] * (high - low)
        return [f for f, keep in zip(ordered, chosen, strict=True) if keep]

    def first_held(self, qualifying: Sequence[Fact], trigger: Collection[str]) -> dt.date:
        """The event date on which the rule first held with one of the `trigger` facts:
        the last date of the shortest date-ordered prefix whose qualifying facts include one.

        Facts outside `qualifying` never take part in a neighbourhood that holds, so the
        prefixes of the qualifying facts alone give the same answer. Holding is monotone in
        the prefix, so a binary search finds the shortest one.
        """
        low, high = 1, len(qualifying)
        if not self._triggered(qualifying, trigger):
            raise ValueError(f"rule {self.id} does not hold for these facts")
        while low < high:
            middle = (low + high) // 2
            if self._triggered(qualifying[:middle], trigger):
                high = middle
            else:
                low = middle + 1
        return qualifying[low - 1].event_date

    def _triggered(self, prefix: Sequence[Fact], trigger: Collection[str]) -> bool:
        return any(f.event_id in trigger for f in self._qualifying(prefix))

    def deadline_for(self, contributions: Sequence[Fact]) -> Deadline:
        domains = {f.domain for f in contributions}
        for special in self.deadline_when:
            if special.domain in domains:
                return special.deadline
        return self.deadline

    def explain(self, contributions: Sequence[Fact]) -> str:
        return self.explanation.format_map(explanation_values(self, contributions))

    @cached_property
    def condition_text(self) -> str:
        """The condition in Dutch, as every alert of the rule carries it ("ten minste 2 ...");
        made once, not for each alert published."""
        return describe_condition(self)


#: The placeholders an explanation text may use, with what they stand for (docs/rules.md).
PLACEHOLDERS: dict[str, str] = {
    "events": "number of contributing events",
    "creditors": "number of distinct creditors among them",
    "creditor_types": "their creditor types in words (energie, huur, ...)",
    "domains": "number of distinct domains",
    "domain_names": "the domains in words (schulden, Wvggz-melding, ...)",
    "window_days": "the rule's window in days",
    "dates": "the event dates, dd-mm-jjjj, in order",
    "deadline": "the deadline rule in words (3 werkdagen, 4 weken, ...)",
}


def explanation_values(rule: Rule, contributions: Sequence[Fact]) -> dict[str, object]:
    creditor_types = sorted({(f.creditor_type or "OVERIGE") for f in contributions if f.creditor})
    domains = sorted({f.domain for f in contributions})
    return {
        "events": len(contributions),
        "creditors": len(_distinct(contributions, _creditor)),
        "creditor_types": ", ".join(c.replace("_", " ").lower() for c in creditor_types),
        "domains": len(domains),
        "domain_names": ", ".join(DOMAIN_NL.get(d, d) for d in domains),
        "window_days": rule.condition.window_days,
        "dates": ", ".join(f"{f.event_date:%d-%m-%Y}" for f in contributions),
        "deadline": rule.deadline_for(contributions).describe(),
    }


#: Event types in words: (one, several).
_EVENT_TYPE_NL = {
    "debt-signal": ("betalingsachterstand", "betalingsachterstanden"),
    "wvggz-report": ("Wvggz-melding", "Wvggz-meldingen"),
    "streettriage-handover": ("Streettriage-overdracht", "Streettriage-overdrachten"),
    "care-indication": ("zorgindicatie", "zorgindicaties"),
}


def describe_condition(rule: Rule) -> str:
    """Builds the Dutch condition text from the rule's data, so text and semantics agree."""
    condition, selection = rule.condition, rule.filter
    several = condition.min_events != 1
    # Every team that sees the alert holds the rule's purpose; domains that purpose does not
    # disclose are not named, so the text cannot suggest which ones this household has.
    nameable = rule.sources <= {d.value for d in PURPOSES[rule.purpose].discloses}
    domains = ", ".join(DOMAIN_NL[d] for d in DOMAIN_NL if d in rule.sources)
    if not nameable:
        kinds = "signalen" if several else "signaal"
    elif selection.event_types:
        kinds = " of ".join(_EVENT_TYPE_NL[t][several] for t in sorted(selection.event_types))
    elif condition.min_domains > 1:
        kinds = "signalen"
    else:
        kinds = f"{'signalen' if several else 'signaal'} uit {domains}"
    count = f"ten minste {condition.min_events}" if several else "een"
    parts = [f"{count} {kinds}"]
    if selection.crisis is True:
        parts.append("met dreigende huisuitzetting of afsluiting")
    elif selection.crisis is False:
        parts.append("zonder crisismelding")
    if selection.creditor_types:
        names = ", ".join(c.replace("_", " ").lower() for c in sorted(selection.creditor_types))
        parts.append(f"van schuldeisers van het type {names}")
    if selection.min_amount_eur:
        parts.append(f"van ten minste {selection.min_amount_eur} euro")
    if condition.min_creditors > 1:
        parts.append(f"bij ten minste {condition.min_creditors} verschillende schuldeisers")
    if condition.min_domains > 1:
        named = f" ({domains})" if nameable else ""
        parts.append(f"uit ten minste {condition.min_domains} verschillende domeinen{named}")
    if condition.window_days and max(condition.min_events, condition.min_creditors) > 1:
        parts.append(f"binnen {condition.window_days} dagen")
    return " ".join(parts)
