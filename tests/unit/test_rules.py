"""The baseline rules and the engine that applies them per household."""

from __future__ import annotations

import datetime as dt
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from services.matcher.engine import RETENTION_DAYS, Engine, empty_state
from services.matcher.facts import Fact
from services.matcher.rules import BASELINE_RULES, add_working_days

HOUSEHOLD = "hh1-test"


def debt(
    n: int,
    day: dt.date,
    creditor: str = "woningcorporatie 01",
    crisis: bool = False,
    creditor_type: str = "HUUR",
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
        amount_eur=700,
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


def run(facts: list[Fact]) -> dict[str, dict]:
    engine = Engine(BASELINE_RULES)
    state = empty_state()
    alerts: dict[str, dict] = {}
    for fact in facts:
        for alert in engine.apply(HOUSEHOLD, state, fact).alerts:
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
    state = empty_state()
    engine.apply(HOUSEHOLD, state, debt(1, D))
    first = engine.apply(HOUSEHOLD, state, debt(2, D, creditor="energie 01")).alerts
    third = engine.apply(HOUSEHOLD, state, debt(3, D, creditor="water 01")).alerts
    assert first[0]["version"] == 1
    assert third[0]["version"] == 2
    assert third[0]["alert_id"] == first[0]["alert_id"]
    assert len(third[0]["contributions"]) == 3


def test_resent_event_counts_once_and_republishes_its_alert() -> None:
    engine = Engine(BASELINE_RULES)
    state = empty_state()
    engine.apply(HOUSEHOLD, state, debt(1, D))
    raised = engine.apply(HOUSEHOLD, state, debt(2, D, creditor="energie 01"))
    again = engine.apply(HOUSEHOLD, state, debt(2, D, creditor="energie 01"))
    assert again.duplicate
    assert again.alerts == raised.alerts
    assert not again.raised and not again.escalated


FACTS = st.lists(
    st.builds(
        lambda n, days, kind, creditor, crisis: (
            debt(n, D + dt.timedelta(days=days), creditor=f"c{creditor}", crisis=crisis)
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
