"""Erases one household on request: its data key, its rows, and its state in the matcher.

The data key goes first in meaning: once it is deleted no copy of the household's contact
details (in the database or in a backup) can be decrypted. Its alerts are deleted, not
kept anonymised: an alert id is derived from the household, and a kept row would block
an alert the household may need again later. The access log stays, as NEN 7513 requires.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.privacy.commands import CommandSender, record_run
from services.shared.db.models import Alert, ContactDetail, HouseholdKey, PseudonymLink
from services.shared.logging import get_logger

log = get_logger("hub.privacy")


@dataclass(frozen=True)
class ErasureReport:
    reference: str
    pseudonyms: int
    keys_destroyed: int
    contacts_deleted: int
    alerts_deleted: list[str]
    matcher_commands: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def linked_pseudonyms(session: AsyncSession, household_ids: list[str]) -> set[str]:
    """The household's pseudonyms under every secret version it was linked through."""
    known = set(household_ids)
    while True:
        links = (
            await session.execute(
                select(PseudonymLink.old_id, PseudonymLink.new_id).where(
                    or_(PseudonymLink.old_id.in_(known), PseudonymLink.new_id.in_(known))
                )
            )
        ).all()
        grown = known | {i for link in links for i in link}
        if grown == known:
            return known
        known = grown


async def erase(
    session: AsyncSession, sender: CommandSender, household_ids: list[str], reference: str
) -> ErasureReport:
    """Runs inside the caller's transaction; the caller commits."""
    started_at = dt.datetime.now(dt.UTC)
    ids = await linked_pseudonyms(session, household_ids)
    keys = len(
        list(
            await session.scalars(
                delete(HouseholdKey)
                .where(HouseholdKey.household_id.in_(ids))
                .returning(HouseholdKey.key_id)
            )
        )
    )
    contacts = len(
        list(
            await session.scalars(
                delete(ContactDetail)
                .where(ContactDetail.household_id.in_(ids))
                .returning(ContactDetail.event_id)
            )
        )
    )
    alerts = list(
        await session.scalars(
            delete(Alert).where(Alert.household_id.in_(ids)).returning(Alert.alert_id)
        )
    )
    commands = await sender.send("ERASE", sorted(ids), f"erasure request {reference}")
    report = ErasureReport(
        reference=reference,
        pseudonyms=len(ids),
        keys_destroyed=keys,
        contacts_deleted=contacts,
        alerts_deleted=sorted(alerts),
        matcher_commands=commands,
    )
    # The household's pseudonym is not recorded: the erasure must not leave a handle on it.
    record_run(session, "erase", started_at, report.to_json(), reference=reference)
    log.info(
        "privacy.erased",
        reference=reference,
        keys_destroyed=keys,
        contacts_deleted=contacts,
        alert_ids=report.alerts_deleted,
    )
    return report
