"""Applies the rules to one household: the same code for the Faust agent and for back-testing.

A household's state holds the facts seen, per rule the open alert (an *episode*), the last
closed one, and the events spent by closed episodes. The Faust table keeps it as JSON
(`Household.to_json`); back-testing keeps the objects.

- An open alert's contributing events only grow, so its final content does not depend on
  the order the events arrived in; each growth is a new version (an escalation).
- When a team closes an alert (an alert-outcome record), its events are spent: they still
  count towards the rule's condition as context, but only an unspent event can start the
  next episode, and during the cool-down only one that brings a domain or creditor the
  closed alert did not have.
- `cutoffs` are left by retention purges: events dated before them no longer count, even
  when a partner sends them again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.matcher.facts import Fact, amount_band
from services.matcher.rules import Rule
from services.shared.events import DOMAIN_NL
from services.shared.identity import alert_id

#: Facts older than this before the household's newest fact are forgotten, unless an open
#: alert holds them. Windows are at most this long (the rules file refuses longer ones), so
#: with events arriving in date order a forgotten fact never mattered; only an event dated
#: more than (this - window) days before one that arrived earlier can miss it.
RETENTION_DAYS = 365

#: How far an event date may lie after the day it was received (time zones, clock skew).
DEFAULT_FUTURE_TOLERANCE_DAYS = 1


@dataclass(slots=True)
class Episode:
    """The open alert of one rule for one household."""

    alert_id: str
    episode: int
    version: int
    event_ids: set[str]
    raised_on: dt.date
    #: The domains and creditors of its events, kept apart from the facts: a retention purge
    #: can remove those, and a closing still needs to know what the alert was about.
    domains: set[str] = field(default_factory=set)
    creditors: set[str] = field(default_factory=set)

    def grow(self, facts: Iterable[Fact]) -> None:
        for fact in facts:
            self.event_ids.add(fact.event_id)
            self.domains.add(fact.domain)
            if fact.creditor is not None:
                self.creditors.add(fact.creditor)


@dataclass(slots=True)
class Closed:
    """What the cool-down needs to know of the last closed alert of a rule."""

    alert_id: str
    episode: int
    closed_on: dt.date
    outcome: str
    domains: frozenset[str]
    creditors: frozenset[str]


@dataclass(slots=True)
class Household:
    facts: dict[str, Fact] = field(default_factory=dict)
    open: dict[str, Episode] = field(default_factory=dict)
    closed: dict[str, Closed] = field(default_factory=dict)
    #: Per rule: the events of its closed episodes.
    spent: dict[str, set[str]] = field(default_factory=dict)
    #: Per domain: events dated before this ISO date are expired (retention).
    cutoffs: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "events": {k: f.to_json() for k, f in self.facts.items()},
            "alerts": {
                rule_id: {
                    "alert_id": e.alert_id,
                    "episode": e.episode,
                    "version": e.version,
                    "event_ids": sorted(e.event_ids),
                    "raised_on": e.raised_on.isoformat(),
                    "domains": sorted(e.domains),
                    "creditors": sorted(e.creditors),
                }
                for rule_id, e in self.open.items()
            },
            "closed": {
                rule_id: {
                    "alert_id": c.alert_id,
                    "episode": c.episode,
                    "closed_on": c.closed_on.isoformat(),
                    "outcome": c.outcome,
                    "domains": sorted(c.domains),
                    "creditors": sorted(c.creditors),
                }
                for rule_id, c in self.closed.items()
            },
            "spent": {rule_id: sorted(ids) for rule_id, ids in self.spent.items() if ids},
            "cutoffs": dict(self.cutoffs),
        }

    @classmethod
    def from_json(cls, household_id: str, data: dict[str, Any]) -> Household:
        facts = {k: Fact.from_json(f) for k, f in data["events"].items()}
        return cls(
            facts=facts,
            open={
                rule_id: _episode_from_json(household_id, rule_id, a, facts)
                for rule_id, a in data["alerts"].items()
            },
            closed={
                rule_id: Closed(
                    alert_id=c["alert_id"],
                    episode=c["episode"],
                    closed_on=dt.date.fromisoformat(c["closed_on"]),
                    outcome=c["outcome"],
                    domains=frozenset(c["domains"]),
                    creditors=frozenset(c["creditors"]),
                )
                for rule_id, c in data.get("closed", {}).items()
            },
            spent={rule_id: set(ids) for rule_id, ids in data.get("spent", {}).items()},
            cutoffs=dict(data.get("cutoffs", {})),
        )


def _episode_from_json(
    household_id: str, rule_id: str, data: dict[str, Any], facts: dict[str, Fact]
) -> Episode:
    episode = Episode(
        # States from before alert ids were stored computed them.
        alert_id=data.get("alert_id") or alert_id(household_id, rule_id, data["episode"]),
        episode=data["episode"],
        version=data["version"],
        event_ids=set(data["event_ids"]),
        raised_on=dt.date.fromisoformat(data["raised_on"]),
        domains=set(data.get("domains", ())),
        creditors=set(data.get("creditors", ())),
    )
    if "domains" not in data:  # a state from before episodes kept them
        episode.grow(facts[e] for e in data["event_ids"] if e in facts)
    return episode


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one event (or one closing) did; `publish` names the rules whose alert
    is to be (re)published, `Engine.records` builds them."""

    duplicate: bool = False
    publish: tuple[str, ...] = ()
    raised: tuple[str, ...] = ()
    escalated: tuple[str, ...] = ()
    #: Rules whose condition held again but stayed quiet for a closed alert's cool-down.
    suppressed: tuple[str, ...] = ()
    #: The event is dated before its domain's retention cutoff and was not counted.
    expired: bool = False
    #: Why the event was refused (an event date in the future); it was not counted.
    rejected: str | None = None


NOTHING = Outcome()


class Engine:
    def __init__(
        self, rules: Sequence[Rule], future_tolerance_days: int = DEFAULT_FUTURE_TOLERANCE_DAYS
    ) -> None:
        self.rules = tuple(rules)
        self._by_id = {r.id: r for r in self.rules}
        self.rule_ids = frozenset(self._by_id)
        self._filters_amount = any(r.filter.min_amount_eur is not None for r in self.rules)
        self._readers_of: dict[tuple[object, ...], tuple[Rule, ...]] = {}
        # Per domain, the rules that read it, in order, and whether they filter its facts.
        self._by_domain = {
            d: tuple((r, not r.filter.everything) for r in self.rules if d in r.sources)
            for d in DOMAIN_NL
        }
        self._tolerance = dt.timedelta(days=future_tolerance_days)

    def apply(self, household_id: str, household: Household, fact: Fact) -> Outcome:
        """Adds `fact` to `household` in place and says which alerts to publish."""
        refused = self._admit(household, fact)
        if refused is not None:
            return refused
        # A fact a rule does not read cannot change that rule's answer.
        outcome = self.evaluate(household_id, household, self._readers(fact), new=(fact.event_id,))
        self._prune(household)
        return outcome

    def apply_all(
        self, household_id: str, household: Household, facts: Sequence[Fact]
    ) -> tuple[Outcome, list[Outcome]]:
        """Adds several facts of one household and evaluates once: the alerts come out as
        `apply` one by one gives them at the end (rules are monotone, so order does not
        matter), but each is raised at version 1. Returns the evaluation's outcome and the
        facts that were refused, expired or duplicate."""
        if len(facts) == 1:  # most households: the same as `apply`, with less bookkeeping
            outcome = self.apply(household_id, household, facts[0])
            if outcome.rejected or outcome.expired or outcome.duplicate:
                return NOTHING, [outcome]
            return outcome, []
        refused: list[Outcome] = []
        readers: dict[str, Rule] = {}
        added: list[str] = []
        for fact in facts:
            verdict = self._admit(household, fact)
            if verdict is not None:
                refused.append(verdict)
                continue
            added.append(fact.event_id)
            for rule in self._readers(fact):
                readers[rule.id] = rule
        outcome = (
            self.evaluate(household_id, household, readers.values(), new=added)
            if readers
            else NOTHING
        )
        self._prune(household)
        return outcome, refused

    def _readers(self, fact: Fact) -> tuple[Rule, ...]:
        # Which rules read a fact depends on a few of its fields only; remembered per
        # combination, as back-testing asks this for a hundred thousand facts a second.
        key = (
            fact.domain,
            fact.event_type,
            fact.creditor_type,
            fact.crisis,
            fact.amount_eur if self._filters_amount else None,
        )
        readers = self._readers_of.get(key)
        if readers is None:
            readers = self._readers_of[key] = tuple(
                rule
                for rule, filters in self._by_domain.get(fact.domain, ())
                if not filters or rule.filter.admits(fact)
            )
        return readers

    def _admit(self, household: Household, fact: Fact) -> Outcome | None:
        """Adds the fact, or says why not: from the future, expired, or seen before."""
        if fact.received_on is not None and fact.event_date > fact.received_on + self._tolerance:
            days = (fact.event_date - fact.received_on).days
            return Outcome(
                rejected=f"event date lies {days} days after the day it was received "
                f"(tolerance {self._tolerance.days})"
            )
        cutoff = household.cutoffs.get(fact.domain)
        if cutoff is not None and fact.event_date.isoformat() < cutoff:
            return Outcome(expired=True)
        if fact.event_id in household.facts:
            # Re-sent event: nothing changes, but re-publish the alerts it belongs to, in case
            # the first attempt died between saving the state and publishing the alert.
            again = tuple(
                rule_id
                for rule_id, e in household.open.items()
                if fact.event_id in e.event_ids and rule_id in self._by_id
            )
            return Outcome(duplicate=True, publish=again)
        household.facts[fact.event_id] = fact
        return None

    def evaluate(
        self,
        household_id: str,
        household: Household,
        rules: Iterable[Rule] | None = None,
        also: Collection[str] = (),
        new: Collection[str] = (),
    ) -> Outcome:
        """Runs the rules (all by default) over the household's facts; raises or escalates
        alerts in place. Alerts of the rules in `also` are published even if unchanged.
        `new` names the facts just added: a cool-down counts as holding them back."""
        raised: list[str] = []
        escalated: list[str] = []
        suppressed: list[str] = []
        facts = household.facts.values()
        for rule in self.rules if rules is None else rules:
            qualifying = rule.qualifying(facts)
            if not qualifying:
                continue
            spent = household.spent.get(rule.id, set())
            fresh = {f.event_id for f in qualifying if f.event_id not in spent}
            current = household.open.get(rule.id)
            trigger = self._may_start(rule, household, qualifying, fresh)
            if current is not None:
                if fresh <= current.event_ids:
                    continue
                current.grow(qualifying)
                current.version += 1
                # Only a fact that could have started the alert can move its date: a quiet one
                # (cool-down) joins it without making it older.
                if trigger:
                    current.raised_on = min(current.raised_on, rule.first_held(qualifying, trigger))
                escalated.append(rule.id)
                continue
            if not trigger:
                if not fresh.isdisjoint(new):
                    suppressed.append(rule.id)
                continue
            closed = household.closed.get(rule.id)
            episode = closed.episode + 1 if closed else 1
            opened = Episode(
                alert_id=alert_id(household_id, rule.id, episode),
                episode=episode,
                version=1,
                event_ids=set(),
                raised_on=rule.first_held(qualifying, trigger),
            )
            opened.grow(qualifying)
            household.open[rule.id] = opened
            raised.append(rule.id)
        if not (raised or escalated or suppressed or also):
            return NOTHING
        changed = [*raised, *escalated]
        publish = (
            *changed,
            *(r for r in also if r not in changed and r in household.open and r in self._by_id),
        )
        return Outcome(
            publish=publish,
            raised=tuple(raised),
            escalated=tuple(escalated),
            suppressed=tuple(suppressed),
        )

    @staticmethod
    def _may_start(
        rule: Rule, household: Household, qualifying: Sequence[Fact], fresh: set[str]
    ) -> set[str]:
        """The fresh facts that may start a new episode: all of them, unless the rule's last
        alert was closed and the cool-down holds, which only a new domain or creditor, or an
        event dated after the cool-down, breaks."""
        closed = household.closed.get(rule.id)
        if closed is None:
            return fresh
        quiet_until = closed.closed_on + dt.timedelta(days=rule.cooldown_days)
        return {
            f.event_id
            for f in qualifying
            if f.event_id in fresh
            and (
                f.event_date > quiet_until
                or f.domain not in closed.domains
                or (f.creditor is not None and f.creditor not in closed.creditors)
            )
        }

    def close(
        self,
        household: Household,
        rule_id: str,
        closed_alert_id: str,
        closed_on: dt.date,
        outcome: str,
    ) -> bool:
        """Closes the rule's open alert if it is the one named; its events become spent.

        Returns False (and changes nothing) for an alert that is not open: already closed,
        an earlier episode, or unknown, so a re-sent outcome is harmless.
        """
        current = household.open.get(rule_id)
        if current is None or current.alert_id != closed_alert_id:
            return False
        household.closed[rule_id] = Closed(
            alert_id=current.alert_id,
            episode=current.episode,
            closed_on=closed_on,
            outcome=outcome,
            domains=frozenset(current.domains),
            creditors=frozenset(current.creditors),
        )
        household.spent.setdefault(rule_id, set()).update(current.event_ids)
        del household.open[rule_id]
        return True

    def _prune(self, household: Household) -> None:
        facts = household.facts
        if len(facts) < 2:
            return
        horizon = max(f.event_date for f in facts.values()) - dt.timedelta(days=RETENTION_DAYS)
        old = [k for k, f in facts.items() if f.event_date < horizon]
        if not old:
            return
        held = {e for episode in household.open.values() for e in episode.event_ids}
        for event_id in old:
            if event_id not in held:
                del facts[event_id]
                for ids in household.spent.values():
                    ids.discard(event_id)

    def records(
        self, household_id: str, household: Household, rule_ids: Iterable[str]
    ) -> list[dict[str, Any]]:
        """The alert records (Avro `HouseholdAlert`) of the rules' open alerts.

        A rule the rules file no longer has is left out: its alert stays as the team has it.
        """
        found = (
            self.record(household_id, household, r)
            for r in rule_ids
            if r in self._by_id and r in household.open
        )
        return [r for r in found if r is not None]

    def summary(
        self, household_id: str, household: Household, rule_id: str
    ) -> dict[str, Any] | None:
        """What back-testing reports of an alert: its identity, place and dates, and the
        ids of its events; the cheap part of `record`."""
        rule = self._by_id[rule_id]
        current = household.open[rule_id]
        contributions = sorted(
            (household.facts[e] for e in current.event_ids if e in household.facts),
            key=Fact.sort_key,
        )
        if not contributions:
            return None  # every event purged by retention: nothing left to show
        newest = contributions[-1]
        deadline = rule.deadline_for(contributions)
        return {
            "alert_id": current.alert_id,
            "household_id": household_id,
            "municipality_code": newest.municipality_code,
            "wijk_code": newest.wijk_code,
            "rule_id": rule.id,
            "rule_version": rule.version,
            "rule_title": rule.title,
            "episode": current.episode,
            "version": current.version,
            "priority": rule.priority,
            "raised_on": current.raised_on,
            "deadline": deadline.due(current.raised_on),
            "deadline_rule": deadline.describe(),
            "domains": sorted({f.domain for f in contributions}),
            "event_ids": [f.event_id for f in contributions],
        }

    def record(
        self, household_id: str, household: Household, rule_id: str
    ) -> dict[str, Any] | None:
        """The alert as the matcher publishes it (Avro `HouseholdAlert`)."""
        summary = self.summary(household_id, household, rule_id)
        if summary is None:
            return None
        rule = self._by_id[rule_id]
        contributions = [household.facts[e] for e in summary.pop("event_ids")]
        return {
            **summary,
            "purpose": rule.purpose,
            "legal_basis": rule.legal_basis,
            "condition": rule.condition_text,
            "explanation": rule.explain(contributions),
            "undisclosed_domains": rule.undisclosed_domains,
            "contributions": [
                {
                    "event_id": f.event_id,
                    "event_type": f.event_type,
                    "domain": f.domain,
                    "partner_type": f.partner_type,
                    "event_date": f.event_date,
                    "creditor_type": f.creditor_type,
                    "amount_band": amount_band(f.amount_eur) if f.amount_eur is not None else None,
                }
                for f in contributions
            ],
        }


def purge(household: Household, cutoffs: dict[str, str]) -> int:
    """Drops the events dated before their domain's cutoff; returns how many went.

    Alerts stay (ids, episodes and versions, no facts), so a later event escalates the same
    alert instead of raising one with an id the notifier already holds.
    """
    expired = [
        k
        for k, f in household.facts.items()
        if f.event_date.isoformat() < cutoffs.get(f.domain, "")
    ]
    for event_id in expired:
        del household.facts[event_id]
        for ids in household.spent.values():
            ids.discard(event_id)
    for domain, cutoff in cutoffs.items():
        household.cutoffs[domain] = max(household.cutoffs.get(domain, ""), cutoff)
    return len(expired)


def merge(into: Household, moved: Household) -> set[str]:
    """Joins the state of a household's previous pseudonym into its current one (rotation).

    Returns the rules whose open alerts were joined: they have a new version to publish.
    """
    into.facts.update(moved.facts)
    joined: set[str] = set()
    for rule_id, episode in moved.open.items():
        current = into.open.get(rule_id)
        if current is None:
            into.open[rule_id] = episode
            continue
        joined.add(rule_id)
        current.event_ids |= episode.event_ids
        current.domains |= episode.domains
        current.creditors |= episode.creditors
        current.version = max(current.version, episode.version) + 1
        current.raised_on = min(current.raised_on, episode.raised_on)
        # The older alert is the one the team already works on.
        current.alert_id = episode.alert_id
        current.episode = episode.episode
    for rule_id, closed in moved.closed.items():
        mine = into.closed.get(rule_id)
        if mine is None or closed.closed_on > mine.closed_on:
            into.closed[rule_id] = closed
    for rule_id, ids in moved.spent.items():
        into.spent.setdefault(rule_id, set()).update(ids)
    for domain, cutoff in moved.cutoffs.items():
        into.cutoffs[domain] = max(into.cutoffs.get(domain, ""), cutoff)
    return joined
