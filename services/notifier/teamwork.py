"""A team member's work on alerts, for the team API and the inbox alike: list, open, see
contact details, claim, record the outcome, add a note, read the history.

A member sees an alert when it was routed to their team and their team holds its purpose;
anything else is `NotYours` (403), whatever the URL. Every view of an alert, of its contact
details and of its notes goes to the access log; every claim, outcome and note to
`alert_actions` with who and when.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier import metrics
from services.notifier.access import present
from services.notifier.directory import Member
from services.notifier.outcomes import claim, close
from services.shared.crypto import Vault
from services.shared.db.contacts import StoredContact, current_data_key, data_key_of, open_contacts
from services.shared.db.models import AccessLogEntry, Alert, AlertAction, AlertNote, AlertRoute
from services.shared.errors import DecryptionFailed, HubError
from services.shared.purposes import disclosed_domains

#: Longest note a member can write: a working note, not a case file.
NOTE_MAX_CHARS = 2000


class NotFound(HubError):
    """No alert with this id (or it was erased)."""


class NotYours(HubError):
    """The alert is not routed to the member's team, or its purpose is not the team's."""


class NothingDisclosed(NotYours):
    """The team's purposes disclose none of the alert's domains: no contact details to show."""


class InvalidNote(HubError, ValueError):
    """A note without text, or longer than NOTE_MAX_CHARS."""


class DetailsRemoved(HubError):
    """Retention or erasure removed the alert's personal details."""


@dataclass(frozen=True)
class HistoryEntry:
    at: dt.datetime
    member_id: str
    team_id: str
    #: claim, outcome or note.
    action: str
    outcome: str | None = None
    #: The note's text; None when its household's key was shredded.
    text: str | None = None


def _routed_to(member: Member) -> Any:
    return exists().where(
        AlertRoute.alert_id == Alert.alert_id, AlertRoute.team_id == member.team.team_id
    )


class Teamwork:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        on_outcome: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._on_outcome = on_outcome

    async def _visible(
        self, session: AsyncSession, member: Member, alert_id: str, for_update: bool = False
    ) -> Alert:
        alert = await session.get(Alert, alert_id, with_for_update=for_update)
        if alert is None:
            raise NotFound("no such alert")
        routed = await session.scalar(
            select(
                exists().where(
                    AlertRoute.alert_id == alert_id, AlertRoute.team_id == member.team.team_id
                )
            )
        )
        if not routed or alert.purpose not in member.team.purposes:
            raise NotYours("this alert is not for your team")
        return alert

    @staticmethod
    def _log(
        session: AsyncSession, member: Member, alert: Alert, domains: list[str], action: str
    ) -> None:
        session.add(
            AccessLogEntry(
                member_id=member.member_id,
                team_id=member.team.team_id,
                alert_id=alert.alert_id,
                household_id=alert.household_id,
                purpose=alert.purpose,
                domains=domains,
                action=action,
            )
        )

    async def list_alerts(
        self,
        member: Member,
        *,
        status: str | None = None,
        open_only: bool = False,
        municipality: str | None = None,
        rule: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """The team's alerts: open ones first by deadline (so the overdue ones lead), or with
        `status="closed"` the latest closed first."""
        query = select(Alert).where(_routed_to(member), Alert.purpose.in_(member.team.purposes))
        # Open alerts by deadline, the overdue ones first; closed ones the latest first.
        order = (
            (Alert.closed_at.desc(), Alert.alert_id)
            if status == "closed"
            else (Alert.status == "closed", Alert.deadline, Alert.alert_id)
        )
        if status:
            query = query.where(Alert.status == status)
        if open_only:
            query = query.where(Alert.status != "closed")
        if municipality:
            query = query.where(Alert.municipality_code == municipality)
        if rule:
            query = query.where(Alert.rule_id == rule)
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.scalars(query.order_by(*order).limit(limit).offset(offset))
            return total or 0, [present(r, member.team) for r in rows]

    async def open_alert(self, member: Member, alert_id: str) -> dict[str, Any]:
        """The alert as the team may see it; the view is logged."""
        async with self._sessions() as session, session.begin():
            alert = await self._visible(session, member, alert_id)
            view = present(alert, member.team)
            domains = sorted({c["domain"] for c in view["contributions"]})
            self._log(session, member, alert, domains, "view-alert")
            return view

    async def contacts(
        self, member: Member, alert_id: str
    ) -> tuple[dict[str, Any], list[StoredContact]]:
        """Decrypts the contact details of the events the team's purposes disclose."""
        async with self._sessions() as session, session.begin():
            alert = await self._visible(session, member, alert_id)
            if alert.details_removed_at is not None:
                raise DetailsRemoved("the personal details of this alert were removed")
            disclosed = disclosed_domains(member.team.purposes)
            event_ids = [c.event_id for c in alert.contributions if c.domain in disclosed]
            if not event_ids:  # refused before the access log: nothing would be shown
                raise NothingDisclosed("your team's purposes disclose no details of this alert")
            try:
                stored = await open_contacts(session, self._vault, alert.household_id, event_ids)
            except DecryptionFailed:
                raise DetailsRemoved("the personal details of this alert were removed") from None
            self._log(session, member, alert, sorted({c.domain for c in stored}), "view-contact")
            metrics.CONTACT_VIEWS.labels(alert.rule_id).inc()
            return present(alert, member.team), stored

    async def _act(
        self, member: Member, alert_id: str, action: Callable[[AsyncSession, Alert], object]
    ) -> dict[str, Any]:
        async with self._sessions() as session, session.begin():
            alert = await self._visible(session, member, alert_id, for_update=True)
            action(session, alert)
            return present(alert, member.team)

    async def claim(self, member: Member, alert_id: str) -> dict[str, Any]:
        """Takes the alert on; claiming it again is harmless. Raises outcomes.Conflict."""

        def take(session: AsyncSession, alert: Alert) -> None:
            if claim(session, alert, member.team.team_id, member.member_id):
                metrics.ALERT_ACTIONS.labels("claim", alert.rule_id).inc()

        return await self._act(member, alert_id, take)

    async def record_outcome(self, member: Member, alert_id: str, outcome: str) -> dict[str, Any]:
        """Closes the alert with an outcome from the fixed list; the matcher hears of it."""

        def finish(session: AsyncSession, alert: Alert) -> None:
            close(session, alert, member.team.team_id, member.member_id, outcome)
            metrics.ALERT_ACTIONS.labels("outcome", alert.rule_id).inc()

        view = await self._act(member, alert_id, finish)
        self._on_outcome()  # stored and queued: published in the background
        return view

    async def add_note(self, member: Member, alert_id: str, text: str) -> HistoryEntry:
        """Stores a note sealed with the household's data key (docs/notifier.md#notes)."""
        text = text.strip()
        if not text:
            raise InvalidNote("a note needs some text")
        if len(text) > NOTE_MAX_CHARS:
            raise InvalidNote(f"a note holds at most {NOTE_MAX_CHARS} characters")
        async with self._sessions() as session, session.begin():
            alert = await self._visible(session, member, alert_id)
            if alert.details_removed_at is not None:
                raise DetailsRemoved("the personal details of this alert were removed")
            key_id, data_key = await data_key_of(session, self._vault, alert.household_id)
            now = dt.datetime.now(dt.UTC)
            session.add(
                AlertNote(
                    alert_id=alert_id,
                    at=now,
                    team_id=member.team.team_id,
                    member_id=member.member_id,
                    key_id=key_id,
                    sealed=Vault.seal_note(data_key, alert_id, text),
                    domains=sorted(disclosed_domains(member.team.purposes)),
                )
            )
            session.add(
                AlertAction(
                    alert_id=alert_id,
                    at=now,
                    team_id=member.team.team_id,
                    member_id=member.member_id,
                    action="note",
                )
            )
            metrics.ALERT_ACTIONS.labels("note", alert.rule_id).inc()
            return HistoryEntry(now, member.member_id, member.team.team_id, "note", text=text)

    async def history(self, member: Member, alert_id: str) -> list[HistoryEntry]:
        """Claims, outcomes and the notes this team may read, oldest first; reading notes is
        logged."""
        async with self._sessions() as session, session.begin():
            alert = await self._visible(session, member, alert_id)
            actions = await session.scalars(
                select(AlertAction)
                .where(AlertAction.alert_id == alert_id, AlertAction.action != "note")
                .order_by(AlertAction.at, AlertAction.id)
            )
            entries = [
                HistoryEntry(a.at, a.member_id, a.team_id, a.action, outcome=a.outcome)
                for a in actions
            ]
            # A note is read only by teams that see every domain its writer's team sees: a
            # care worker's note may speak of health, which a debt team must not read.
            seen = disclosed_domains(member.team.purposes)
            notes = [
                n
                for n in await session.scalars(
                    select(AlertNote)
                    .where(AlertNote.alert_id == alert_id)
                    .order_by(AlertNote.at, AlertNote.id)
                )
                if set(n.domains) <= seen
            ]
            if notes:
                key_id, data_key = await current_data_key(
                    session, self._vault, alert.household_id
                ) or (None, b"")
                for note in notes:
                    # A note sealed under a shredded key of the household stays unreadable.
                    text = (
                        Vault.open_note(data_key, alert_id, note.sealed)
                        if note.key_id == key_id
                        else None
                    )
                    entries.append(
                        HistoryEntry(note.at, note.member_id, note.team_id, "note", text=text)
                    )
                self._log(session, member, alert, [], "view-notes")
            return sorted(entries, key=lambda e: e.at)
