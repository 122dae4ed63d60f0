"""Claiming and closing an alert: who may, in which state, and what is recorded."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from services.notifier.outcomes import Conflict, claim, close
from services.shared.db.models import Alert, AlertAction, OutcomeOutbox


class Recorder:
    """Stands in for the database session: the functions only add rows to it."""

    def __init__(self) -> None:
        self.added: list[Any] = []

    def add(self, row: Any) -> None:
        self.added.append(row)


def open_alert() -> Alert:
    return Alert(alert_id="a1", status="open", claimed_by=None, deadline=dt.date(2025, 1, 1))


def test_a_claim_is_recorded_once_and_guards_the_outcome() -> None:
    session, alert = Recorder(), open_alert()
    assert claim(session, alert, "team", "anna")  # type: ignore[arg-type]
    assert not claim(session, alert, "team", "anna")  # type: ignore[arg-type]
    assert (alert.status, alert.claimed_by) == ("claimed", "anna")
    with pytest.raises(Conflict, match="someone else"):
        claim(session, alert, "team", "bram")  # type: ignore[arg-type]
    with pytest.raises(Conflict, match="someone else"):
        close(session, alert, "team", "bram", "hulp-gestart")  # type: ignore[arg-type]
    assert [type(r) for r in session.added] == [AlertAction]


def test_an_outcome_closes_once_and_queues_the_outcome() -> None:
    session, alert = Recorder(), open_alert()
    close(session, alert, "team", "anna", "niet-opgepakt")  # type: ignore[arg-type]
    assert (alert.status, alert.outcome, alert.claimed_by) == ("closed", "niet-opgepakt", "anna")
    action, queued = session.added
    assert isinstance(action, AlertAction) and action.outcome == "niet-opgepakt"
    assert isinstance(queued, OutcomeOutbox) and queued.outcome == "niet-opgepakt"
    with pytest.raises(Conflict, match="closed already"):
        close(session, alert, "team", "anna", "hulp-gestart")  # type: ignore[arg-type]
    with pytest.raises(Conflict, match="closed"):
        claim(session, alert, "team", "anna")  # type: ignore[arg-type]
    assert len(session.added) == 2
