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
from sqlalchemy.orm import InstrumentedAttribute

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
    alerts_deleted: int
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


async def _delete(
    session: AsyncSession, model: Any, returned: InstrumentedAttribute[str], ids: set[str]
) -> list[str]:
    statement = delete(model).where(model.household_id.in_(ids)).returning(returned)
    return list(await session.scalars(statement))


async def erase(
    session: AsyncSession, sender: CommandSender, household_ids: list[str], reference: str
) -> ErasureReport:
    """Runs inside the caller's transaction; the caller commits."""
    started_at = dt.datetime.now(dt.UTC)
    ids = await linked_pseudonyms(session, household_ids)
    keys = await _delete(session, HouseholdKey, HouseholdKey.key_id, ids)
    contacts = await _delete(session, ContactDetail, ContactDetail.event_id, ids)
    alerts = await _delete(session, Alert, Alert.alert_id, ids)
    # The command names the household for a week on the topic: it carries no reference.
    commands = await sender.send("ERASE", sorted(ids), "erasure")
    report = ErasureReport(
        reference=reference,
        pseudonyms=len(ids),
        keys_destroyed=len(keys),
        contacts_deleted=len(contacts),
        alerts_deleted=len(alerts),
        matcher_commands=commands,
    )
    # Counts only: neither the pseudonym nor alert ids (which the access log ties to the
    # pseudonym) are recorded, so the request reference leads back to no household.
    record_run(session, "erase", started_at, report.to_json(), reference=reference)
    log.info("privacy.erased", **report.to_json())
    return report
