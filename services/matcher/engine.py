"""Applies the rules to one household's state: the same code for the Faust agent and for replay.

The state is a JSON-ready dict (it lives in a Faust table):

    {"events": {event_id: fact},
     "alerts": {rule_id: {"alert_id", "episode", "version", "event_ids", "raised_on"}},
     "cutoffs": {domain: iso date}}

An alert's contributing events only grow while it is open, so its final content does not
depend on the order the events arrived in; each growth is a new version (an escalation).
`cutoffs` are left by retention purges: events dated before them no longer count, even
when a partner sends them again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.matcher.facts import Fact, amount_band
from services.matcher.rules import Rule
from services.shared.identity import alert_id

#: Facts older than this before the household's newest fact can no longer join any window.
RETENTION_DAYS = 365

State = dict[str, Any]


def empty_state() -> State:
    return {"events": {}, "alerts": {}}


@dataclass(frozen=True)
class Outcome:
    """What applying one event did."""

    duplicate: bool
    alerts: list[dict[str, Any]]
    raised: list[str]
    escalated: list[str]
    #: The event is dated before its domain's retention cutoff and was not counted.
    expired: bool = False


class Engine:
    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self._by_id = {r.id: r for r in self.rules}

    def apply(self, household_id: str, state: State, fact: Fact) -> Outcome:
        """Adds `fact` to `state` in place and returns the alerts to publish."""
        events: dict[str, Any] = state["events"]
        cutoff = state.get("cutoffs", {}).get(fact.domain)
        if cutoff is not None and fact.event_date.isoformat() < cutoff:
            return Outcome(False, [], [], [], expired=True)
        if fact.event_id in events:
            # Re-sent event: nothing changes, but re-publish the alerts it belongs to, in case
            # the first attempt died between saving the state and publishing the alert.
            again = [
                self._record(household_id, rule_id, alert, events)
                for rule_id, alert in state["alerts"].items()
                if fact.event_id in alert["event_ids"]
            ]
            return Outcome(True, again, [], [])

        events[fact.event_id] = fact.to_json()
        outcome = self.evaluate(household_id, state)
        self._prune(state)
        return outcome

    def evaluate(
        self, household_id: str, state: State, also: frozenset[str] | set[str] = frozenset()
    ) -> Outcome:
        """Runs every rule over the state's facts; raises or escalates alerts in place.

        Alerts of the rules in `also` are published even when they did not grow here.
        """
        events: dict[str, Any] = state["events"]
        facts = [Fact.from_json(f) for f in events.values()]
        published: list[dict[str, Any]] = []
        raised: list[str] = []
        escalated: list[str] = []
        for rule in self.rules:
            qualifying = rule.qualifying(facts)
            if not qualifying:
                if rule.id in also:
                    published.append(
                        self._record(household_id, rule.id, state["alerts"][rule.id], events)
                    )
                continue
            alert = state["alerts"].get(rule.id)
            raised_on = rule.raised_on([f for f in facts if f.event_id in qualifying])
            if alert is None:
                alert = {
                    "alert_id": alert_id(household_id, rule.id, 1),
                    "episode": 1,
                    "version": 1,
                    "event_ids": sorted(qualifying),
                    "raised_on": raised_on.isoformat(),
                }
                state["alerts"][rule.id] = alert
                raised.append(rule.id)
            else:
                grown = set(alert["event_ids"]) | qualifying
                if grown == set(alert["event_ids"]):
                    continue
                alert["event_ids"] = sorted(grown)
                alert["version"] += 1
                alert["raised_on"] = min(alert["raised_on"], raised_on.isoformat())
                escalated.append(rule.id)
            published.append(self._record(household_id, rule.id, alert, events))
        for rule_id in sorted(set(also) - {a["rule_id"] for a in published}):
            published.append(self._record(household_id, rule_id, state["alerts"][rule_id], events))
        return Outcome(False, published, raised, escalated)

    def _prune(self, state: State) -> None:
        events: dict[str, Any] = state["events"]
        if not events:
            return
        newest = max(f["event_date"] for f in events.values())
        horizon = (dt.date.fromisoformat(newest) - dt.timedelta(days=RETENTION_DAYS)).isoformat()
        in_alert = {e for a in state["alerts"].values() for e in a["event_ids"]}
        for event_id in [k for k, f in events.items() if f["event_date"] < horizon]:
            if event_id not in in_alert:
                del events[event_id]

    def _record(
        self, household_id: str, rule_id: str, alert: dict[str, Any], events: dict[str, Any]
    ) -> dict[str, Any]:
        rule = self._by_id[rule_id]
        contributions = sorted(
            (Fact.from_json(events[e]) for e in alert["event_ids"] if e in events),
            key=Fact.sort_key,
        )
        newest = contributions[-1]
        raised_on = dt.date.fromisoformat(alert["raised_on"])
        deadline = rule.deadline_for(contributions)
        return {
            # States from before re-keying existed computed the id; a re-keyed one keeps it.
            "alert_id": alert.get("alert_id") or alert_id(household_id, rule.id, alert["episode"]),
            "household_id": household_id,
            "municipality_code": newest.municipality_code,
            "wijk_code": newest.wijk_code,
            "rule_id": rule.id,
            "rule_version": rule.version,
            "episode": alert["episode"],
            "version": alert["version"],
            "priority": rule.priority,
            "purpose": rule.purpose,
            "legal_basis": rule.legal_basis,
            "raised_on": raised_on,
            "deadline": deadline.due(raised_on),
            "deadline_rule": deadline.describe(),
            "domains": sorted({f.domain for f in contributions}),
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


def purge(state: State, cutoffs: dict[str, str]) -> int:
    """Drops the events dated before their domain's cutoff; returns how many went.

    Alerts stay (ids, episodes and versions, no facts), so a later event escalates the same
    alert instead of raising one with an id the notifier already holds.
    """
    events: dict[str, Any] = state["events"]
    expired = [k for k, f in events.items() if f["event_date"] < cutoffs.get(f["domain"], "")]
    for event_id in expired:
        del events[event_id]
    known = state.setdefault("cutoffs", {})
    for domain, cutoff in cutoffs.items():
        known[domain] = max(known.get(domain, ""), cutoff)
    return len(expired)


def merge(into: State, moved: State) -> set[str]:
    """Joins the state of a household's previous pseudonym into its current one (rotation).

    Returns the rules whose alerts were joined: they have a new version to publish.
    """
    into["events"].update(moved["events"])
    joined: set[str] = set()
    for rule_id, alert in moved["alerts"].items():
        current = into["alerts"].get(rule_id)
        if current is None:
            into["alerts"][rule_id] = alert
            continue
        joined.add(rule_id)
        current["event_ids"] = sorted(set(current["event_ids"]) | set(alert["event_ids"]))
        current["version"] = max(current["version"], alert["version"]) + 1
        current["raised_on"] = min(current["raised_on"], alert["raised_on"])
        # The older alert is the one the team already works on.
        current["alert_id"] = alert.get("alert_id") or current.get("alert_id")
    for domain, cutoff in moved.get("cutoffs", {}).items():
        known = into.setdefault("cutoffs", {})
        known[domain] = max(known.get(domain, ""), cutoff)
    return joined
