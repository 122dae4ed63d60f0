"""The baseline rules and the engine that applies them per household; episodes; properties."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.matcher.engine import RETENTION_DAYS, Engine, Household, purge
from services.matcher.facts import Fact
from services.matcher.rules import Condition, Deadline, Filter, Rule, add_working_days
from services.matcher.ruleset import DEFAULT_RULES_FILE, load_ruleset

BASELINE_RULES = load_ruleset(DEFAULT_RULES_FILE).rules

HOUSEHOLD = "hh1-test"


def debt(
    n: int,
    day: dt.date,
    creditor: str = "woningcorporatie 01",
    crisis: bool = False,
    creditor_type: str = "HUUR",
    amount: int = 700,
) -> Fact:
    return Fact(
        event_id=f"d{n}",
        event_type="debt-signal",
        domain="debt",
        partner_id=creditor,
        partner_type=creditor_type,
        event_date=day,
        municipality_code="GM0153",
        wijk_code=None,
        creditor_type=creditor_type,
        creditor=creditor,
        amount_eur=amount,
        crisis=crisis,
    )


def other(n: int, day: dt.date, event_type: str, domain: str) -> Fact:
    return Fact(
        event_id=f"o{n}",
        event_type=event_type,
        domain=domain,
        partner_id="p",
        partner_type="X",
        event_date=day,
        municipality_code="GM0153",
        wijk_code=None,
    )


def run(facts: list[Fact], rules: tuple[Rule, ...] = BASELINE_RULES) -> dict[str, dict]:
    engine = Engine(rules)
    state = Household()
    alerts: dict[str, dict] = {}
    for fact in facts:
        for alert in engine.records(HOUSEHOLD, state, engine.apply(HOUSEHOLD, state, fact).publish):
            alerts[alert["rule_id"]] = alert
    return alerts


D = dt.date(2025, 3, 3)


def test_twente_match_needs_two_creditors_within_90_days() -> None:
    same_creditor = run([debt(1, D), debt(2, D + dt.timedelta(days=30))])
    assert "twente-match" not in same_creditor
    too_far = run([debt(1, D), debt(2, D + dt.timedelta(days=91), creditor="energie 01")])
    assert "twente-match" not in too_far
    match = run([debt(1, D), debt(2, D + dt.timedelta(days=90), creditor="energie 01")])
    alert = match["twente-match"]
    assert [c["event_id"] for c in alert["contributions"]] == ["d1", "d2"]
    assert alert["deadline"] == D + dt.timedelta(days=90 + 28)
    assert alert["purpose"] == "debt-help"
    assert "2 verschillende schuldeisers" in alert["explanation"]


def test_late_event_inside_the_window_still_counts() -> None:
    # The April signal arrives after the June one but happened within 90 days of it.
    alerts = run([debt(1, D + dt.timedelta(days=100)), debt(2, D, creditor="energie 01")])
    assert "twente-match" not in alerts
    alerts = run([debt(1, D + dt.timedelta(days=60)), debt(2, D, creditor="energie 01")])
    assert alerts["twente-match"]["raised_on"] == D + dt.timedelta(days=60)


def test_crisis_deadline_is_three_working_days_with_dutch_holidays() -> None:
    # Friday 25 April 2025; Monday 28 April is an ordinary day, King's Day is Sunday the 27th.
    assert add_working_days(dt.date(2025, 4, 25), 3) == dt.date(2025, 4, 30)
    # Thursday 17 April 2025: Good Friday (18th) and Easter Monday (21st) do not count.
    assert add_working_days(dt.date(2025, 4, 17), 3) == dt.date(2025, 4, 24)
    # 5 May counts every year for the Algemene termijnenwet, not only in lustrum years.
    assert add_working_days(dt.date(2026, 5, 4), 1) == dt.date(2026, 5, 6)
    alert = run([debt(1, dt.date(2025, 4, 17), crisis=True)])["debt-crisis"]
    assert alert["priority"] == "URGENT"
    assert alert["deadline"] == dt.date(2025, 4, 24)
    assert alert["deadline_rule"] == "3 werkdagen"


def test_multi_domain_and_its_wvggz_deadline() -> None:
    alerts = run([debt(1, D), other(1, D + dt.timedelta(days=170), "care-indication", "care")])
    assert alerts["multi-domain"]["deadline"] == D + dt.timedelta(days=170 + 28)
    alerts = run([debt(1, D), other(2, D + dt.timedelta(days=10), "wvggz-report", "wvggz")])
    assert alerts["multi-domain"]["deadline"] == D + dt.timedelta(days=10 + 14)
    assert alerts["multi-domain"]["domains"] == ["debt", "wvggz"]
    assert "multi-domain" not in run(
        [debt(1, D), other(1, D + dt.timedelta(days=181), "care-indication", "care")]
    )


def test_twente_match_never_reads_health_sources() -> None:
    alerts = run(
        [debt(1, D), other(2, D, "wvggz-report", "wvggz"), other(3, D, "care-indication", "care")]
    )
    assert "twente-match" not in alerts
    assert all(
        c["domain"] == "debt"
        for a in alerts.values()
        if a["purpose"] == "debt-help"
        for c in a["contributions"]
    )


def test_open_alert_escalates_instead_of_duplicating() -> None:
    engine = Engine(BASELINE_RULES)
    state = Household()

    def apply(fact: Fact) -> list[dict]:
        return engine.records(HOUSEHOLD, state, engine.apply(HOUSEHOLD, state, fact).publish)

    apply(debt(1, D))
    first = apply(debt(2, D, creditor="energie 01"))
    third = apply(debt(3, D, creditor="water 01"))
    assert first[0]["version"] == 1
    assert third[0]["version"] == 2
    assert third[0]["alert_id"] == first[0]["alert_id"]
    assert len(third[0]["contributions"]) == 3


def test_resent_event_counts_once_and_republishes_its_alert() -> None:
    engine = Engine(BASELINE_RULES)
    state = Household()
    engine.apply(HOUSEHOLD, state, debt(1, D))
    raised = engine.apply(HOUSEHOLD, state, debt(2, D, creditor="energie 01"))
    again = engine.apply(HOUSEHOLD, state, debt(2, D, creditor="energie 01"))
    assert again.duplicate
    assert engine.records(HOUSEHOLD, state, again.publish) == engine.records(
        HOUSEHOLD, state, raised.publish
    )
    assert not again.raised and not again.escalated


FACTS = st.lists(
    st.builds(
        lambda n, days, kind, creditor, crisis: (
            debt(
                n,
                D + dt.timedelta(days=days),
                creditor=f"c{creditor}",
                crisis=crisis,
                creditor_type=("HUUR", "ENERGIE")[creditor % 2],
                amount=250 * (creditor + 1),
            )
            if kind == "debt"
            else other(n, D + dt.timedelta(days=days), f"{kind}-event", kind)
        ),
        st.integers(0, 10_000),
        # Within the engine's retention: events a year older than a household's newest one
        # are forgotten, so order can only matter beyond that.
        st.integers(0, RETENTION_DAYS),
        st.sampled_from(["debt", "debt", "wvggz", "care", "streettriage"]),
        st.integers(0, 3),
        st.booleans(),
    ),
    max_size=12,
    unique_by=lambda f: f.event_id,
)


def _final(alerts: dict[str, dict]) -> dict[str, tuple]:
    return {
        r: (
            a["alert_id"],
            a["raised_on"],
            a["deadline"],
            tuple(c["event_id"] for c in a["contributions"]),
        )
        for r, a in alerts.items()
    }


@settings(max_examples=200, deadline=None)
@given(FACTS, st.randoms(use_true_random=False), st.data())
def test_result_does_not_depend_on_arrival_order_or_resending(
    facts: list[Fact], rnd: random.Random, data: st.DataObject
) -> None:
    shuffled = facts[:]
    rnd.shuffle(shuffled)
    resent = data.draw(st.lists(st.sampled_from(facts), max_size=5)) if facts else []
    with_resends = shuffled + resent
    rnd.shuffle(with_resends)
    assert _final(run(shuffled)) == _final(run(facts)) == _final(run(with_resends))


# Any rule the rules file can express, not only the baseline: the properties are about the
# semantics every rule shares.
RULES = st.builds(
    lambda window, events, creditors, domains, crisis, minimum, kinds, sources: Rule(
        id="generated",
        version=1,
        title="generated",
        purpose="integrated-approach",
        legal_basis="test",
        priority="NORMAL",
        sources=frozenset(sources),
        condition=Condition(
            window_days=window,
            min_events=max(events, creditors, domains),
            min_creditors=creditors,
            min_domains=domains,
        ),
        deadline=Deadline(14, working_days=True),
        filter=Filter(crisis=crisis, min_amount_eur=minimum, creditor_types=frozenset(kinds)),
        explanation="{events} signalen op {dates}",
    ),
    st.integers(0, RETENTION_DAYS),
    st.integers(1, 4),
    st.integers(0, 3),
    st.integers(0, 3),
    st.sampled_from([None, True, False]),
    st.sampled_from([None, 0, 500, 1000]),
    st.sets(st.sampled_from(["HUUR", "ENERGIE"]), max_size=1),
    st.sets(st.sampled_from(["debt", "wvggz", "care", "streettriage"]), min_size=1),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(RULES, min_size=1, max_size=3), FACTS, st.randoms(use_true_random=False))
def test_any_rule_gives_the_same_alerts_in_any_order_and_with_any_resends(
    rules: list[Rule], facts: list[Fact], rnd: random.Random
) -> None:
    ruleset = tuple(Rule(**{**vars(r), "id": f"r{n}"}) for n, r in enumerate(rules))  # distinct ids
    shuffled = facts[:]
    rnd.shuffle(shuffled)
    resent = shuffled + [rnd.choice(facts) for _ in range(3)] if facts else []
    rnd.shuffle(resent)
    expected = _final(run(facts, ruleset))
    assert _final(run(shuffled, ruleset)) == expected
    assert _final(run(resent, ruleset)) == expected


@settings(max_examples=100, deadline=None)
@given(FACTS, st.randoms(use_true_random=False))
def test_a_household_applied_at_once_gives_what_one_by_one_gives(
    facts: list[Fact], rnd: random.Random
) -> None:
    """`Engine.apply_all` (back-testing a file) against `Engine.apply` (the live agent)."""
    engine = Engine(BASELINE_RULES)
    together = Household()
    resent = [rnd.choice(facts)] if facts else []
    outcome, _ = engine.apply_all(HOUSEHOLD, together, facts + resent)
    at_once = {a["rule_id"]: a for a in engine.records(HOUSEHOLD, together, outcome.publish)}
    assert _final(at_once) == _final(run(facts))


def _close(engine: Engine, state: Household, rule_id: str, day: dt.date) -> bool:
    return engine.close(state, rule_id, state.open[rule_id].alert_id, day, "hulp-gestart")


def test_a_closed_alert_cools_down_unless_a_new_creditor_appears() -> None:
    engine = Engine(BASELINE_RULES)
    state = Household()
    engine.apply(HOUSEHOLD, state, debt(1, D))
    first = engine.apply(HOUSEHOLD, state, debt(2, D, creditor="energie 01"))
    first_id = state.open["twente-match"].alert_id
    assert first.raised == ("twente-match",)
    assert _close(engine, state, "twente-match", D + dt.timedelta(days=5))
    # The same creditors again within 30 days of closing: quiet, and counted as such.
    quiet = engine.apply(HOUSEHOLD, state, debt(3, D + dt.timedelta(days=20)))
    assert quiet.publish == () and quiet.suppressed == ("twente-match",)
    assert "twente-match" not in state.open
    # A later signal that joins no window holds nothing back: the quiet one counts once.
    apart = engine.apply(HOUSEHOLD, state, debt(8, D + dt.timedelta(days=300)))
    assert apart.suppressed == ()
    # A creditor the closed alert did not have: a new episode at once, with a new id.
    new = engine.apply(HOUSEHOLD, state, debt(4, D + dt.timedelta(days=25), creditor="water 01"))
    assert "twente-match" in new.raised
    (alert,) = engine.records(HOUSEHOLD, state, ["twente-match"])
    assert alert["episode"] == 2 and alert["alert_id"] != first_id
    assert alert["raised_on"] == D + dt.timedelta(days=25)
    # The closed alert's events still count as context: all four are in the new one.
    assert [c["event_id"] for c in alert["contributions"]] == ["d1", "d2", "d3", "d4"]


def test_after_the_cool_down_the_same_creditor_starts_a_new_episode() -> None:
    engine = Engine(BASELINE_RULES)
    state = Household()
    engine.apply(HOUSEHOLD, state, debt(1, D))
    engine.apply(HOUSEHOLD, state, debt(2, D, creditor="energie 01"))
    closed_on = D + dt.timedelta(days=1)
    assert _close(engine, state, "twente-match", closed_on)
    on_last_day = engine.apply(HOUSEHOLD, state, debt(3, closed_on + dt.timedelta(days=30)))
    assert on_last_day.suppressed == ("twente-match",)
    after = engine.apply(HOUSEHOLD, state, debt(4, closed_on + dt.timedelta(days=31)))
    assert after.raised == ("twente-match",)
    assert state.open["twente-match"].episode == 2


def test_closing_is_idempotent_and_only_for_the_open_alert() -> None:
    engine = Engine(BASELINE_RULES)
    state = Household()
    engine.apply(HOUSEHOLD, state, debt(1, D, crisis=True))
    crisis_id = state.open["debt-crisis"].alert_id
    assert not engine.close(state, "debt-crisis", "another-alert", D, "hulp-gestart")
    assert engine.close(state, "debt-crisis", crisis_id, D, "niet-opgepakt")
    assert not engine.close(state, "debt-crisis", crisis_id, D, "niet-opgepakt")  # re-sent
    assert state.closed["debt-crisis"].outcome == "niet-opgepakt"


def test_an_event_from_the_future_is_refused_with_the_reason() -> None:
    engine = Engine(BASELINE_RULES, future_tolerance_days=1)
    state = Household()
    tomorrow = dataclasses.replace(debt(1, D + dt.timedelta(days=1)), received_on=D)
    assert engine.apply(HOUSEHOLD, state, tomorrow).rejected is None
    later = dataclasses.replace(debt(2, D + dt.timedelta(days=9)), received_on=D)
    outcome = engine.apply(HOUSEHOLD, state, later)
    assert outcome.rejected == "event date lies 9 days after the day it was received (tolerance 1)"
    assert "d2" not in state.facts


def test_the_state_survives_its_json_form_and_old_states_still_load() -> None:
    engine = Engine(BASELINE_RULES)
    state = Household()
    engine.apply(HOUSEHOLD, state, debt(1, D, crisis=True))
    engine.apply(HOUSEHOLD, state, debt(2, D, creditor="energie 01"))
    _close(engine, state, "debt-crisis", D)
    assert Household.from_json(HOUSEHOLD, state.to_json()) == state
    # A state written before episodes could close: no closed, spent or alert ids.
    old = state.to_json()
    for key in ("closed", "spent", "cutoffs"):
        old.pop(key)
    for alert in old["alerts"].values():
        alert.pop("alert_id")
        for fact in old["events"].values():
            fact.pop("received_on", None)
    loaded = Household.from_json(HOUSEHOLD, old)
    assert loaded.open["twente-match"].alert_id == state.open["twente-match"].alert_id


def test_a_window_holds_only_events_within_its_days_of_each_other() -> None:
    # Creditor A on day 0 and day 90, creditor B on day 180: only the last two are one match.
    facts = [
        debt(1, D),
        debt(2, D + dt.timedelta(days=90)),
        debt(3, D + dt.timedelta(days=180), creditor="energie 01"),
    ]
    alert = run(facts)["twente-match"]
    assert [c["event_id"] for c in alert["contributions"]] == ["d2", "d3"]
    assert alert["raised_on"] == D + dt.timedelta(days=180)


def test_a_rule_taken_out_of_the_file_leaves_its_alerts_alone() -> None:
    """The matcher restarted with a rules file without `twente-match` meets a household
    whose state holds an open Twente-match, and a re-send of one of its events."""
    state = Household()
    Engine(BASELINE_RULES).apply(HOUSEHOLD, state, debt(1, D))
    Engine(BASELINE_RULES).apply(HOUSEHOLD, state, debt(2, D, creditor="energie 01"))
    assert "twente-match" in state.open
    without = Engine([r for r in BASELINE_RULES if r.id != "twente-match"])
    again = without.apply(HOUSEHOLD, state, debt(2, D, creditor="energie 01"))
    assert again.duplicate and again.publish == ()
    assert without.records(HOUSEHOLD, state, ["twente-match", "debt-crisis"]) == []
    later = without.apply(HOUSEHOLD, state, debt(3, D, creditor="water 01", crisis=True))
    assert [a["rule_id"] for a in without.records(HOUSEHOLD, state, later.publish)] == [
        "debt-crisis"
    ]


@pytest.mark.parametrize("late_first", [False, True])
def test_a_quiet_event_joins_the_next_episode_without_making_it_older(late_first: bool) -> None:
    engine = Engine(BASELINE_RULES)
    state = Household()
    engine.apply(HOUSEHOLD, state, debt(1, dt.date(2025, 3, 3)))
    engine.apply(HOUSEHOLD, state, debt(2, dt.date(2025, 3, 20), creditor="energie 01"))
    _close(engine, state, "twente-match", dt.date(2025, 4, 1))
    quiet = debt(3, dt.date(2025, 4, 10))  # a creditor of the closed alert, in the cool-down
    after = debt(4, dt.date(2025, 5, 20))  # the same creditor after the cool-down
    for fact in [after, quiet] if late_first else [quiet, after]:
        engine.apply(HOUSEHOLD, state, fact)
    # Much later, a signal dated before the closing arrives: it joins, the date stays.
    engine.apply(HOUSEHOLD, state, debt(5, dt.date(2025, 3, 10)))
    (alert,) = engine.records(HOUSEHOLD, state, ["twente-match"])
    assert alert["episode"] == 2
    assert alert["raised_on"] == dt.date(2025, 5, 20)
    assert alert["deadline"] == dt.date(2025, 6, 17)


@settings(max_examples=100, deadline=None)
@given(FACTS, FACTS, st.integers(0, RETENTION_DAYS), st.randoms(use_true_random=False))
def test_after_a_closing_the_next_episode_does_not_depend_on_arrival_order(
    before: list[Fact], after: list[Fact], closed_day: int, rnd: random.Random
) -> None:
    after = [dataclasses.replace(f, event_id=f"later-{f.event_id}") for f in after]

    def final(order: list[Fact]) -> dict[str, tuple]:
        engine = Engine(BASELINE_RULES)
        state = Household()
        for fact in before:
            engine.apply(HOUSEHOLD, state, fact)
        for rule_id in list(state.open):
            _close(engine, state, rule_id, D + dt.timedelta(days=closed_day))
        alerts = {}
        for fact in order:
            for alert in engine.records(
                HOUSEHOLD, state, engine.apply(HOUSEHOLD, state, fact).publish
            ):
                alerts[alert["rule_id"]] = alert
        return _final(alerts)

    shuffled = after[:]
    rnd.shuffle(shuffled)
    assert final(shuffled) == final(after)


def test_a_closing_after_a_purge_still_knows_the_alerts_creditors() -> None:
    engine = Engine(BASELINE_RULES)
    state = Household()
    engine.apply(HOUSEHOLD, state, debt(1, D))
    engine.apply(HOUSEHOLD, state, debt(2, D, creditor="energie 01"))
    purge(state, {"debt": (D + dt.timedelta(days=1)).isoformat()})
    assert state.facts == {}
    assert _close(engine, state, "twente-match", D + dt.timedelta(days=2))
    assert state.closed["twente-match"].creditors == {"woningcorporatie 01", "energie 01"}
