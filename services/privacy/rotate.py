"""Rotates the pseudonym secret: every stored household pseudonym moves to the new version.

Version n pseudonyms are derived from version n-1 ones (`Pseudonymiser.rekey`), so no
address is needed. The database rows move in one transaction, each old pseudonym is
linked to its new one, and the matcher moves each household's state (REKEY, then MERGE
under the new key). Run it while ingest is stopped and the matcher has caught up, then
start ingest with the new version (docs/privacy.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.privacy.commands import CommandSender, record_run
from services.shared.db.models import (
    Alert,
    ContactDetail,
    HouseholdKey,
    OutcomeOutbox,
    PseudonymLink,
)
from services.shared.identity import Pseudonymiser
from services.shared.logging import get_logger

log = get_logger("hub.privacy")


@dataclass(frozen=True)
class RotationReport:
    to_version: int
    households: int
    already_current: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def rotate(
    session: AsyncSession, sender: CommandSender, pseudonyms: Pseudonymiser
) -> RotationReport:
    """Runs inside the caller's transaction; the caller commits."""
    started_at = dt.datetime.now(dt.UTC)
    # Outcomes not yet published wait (the notifier skips locked rows) and then go out with
    # the new pseudonym, after the matcher's REKEY has been sent.
    await session.execute(
        select(OutcomeOutbox.alert_id).where(OutcomeOutbox.published_at.is_(None)).with_for_update()
    )
    previous = f"hh{pseudonyms.version - 1}-"
    known = sorted(
        set(await session.scalars(select(HouseholdKey.household_id)))
        | set(await session.scalars(select(ContactDetail.household_id).distinct()))
        | set(await session.scalars(select(Alert.household_id).distinct()))
    )
    old_ids = [h for h in known if h.startswith(previous)]
    new_ids = {old: pseudonyms.rekey(old) for old in old_ids}
    if new_ids:
        await session.execute(
            insert(PseudonymLink)
            .values(
                [
                    {"old_id": old, "new_id": new, "to_version": pseudonyms.version}
                    for old, new in new_ids.items()
                ]
            )
            .on_conflict_do_nothing()
        )
    # The links are the mapping: one set-based update per table.
    for model in (HouseholdKey, ContactDetail, Alert):
        await session.execute(
            update(model)
            .where(
                model.household_id == PseudonymLink.old_id,
                PseudonymLink.to_version == pseudonyms.version,
            )
            .values(household_id=PseudonymLink.new_id)
        )
    await sender.send(
        "REKEY", old_ids, f"pseudonym rotation to version {pseudonyms.version}", new_ids=new_ids
    )
    report = RotationReport(pseudonyms.version, len(old_ids), len(known) - len(old_ids))
    record_run(session, "rotate", started_at, report.to_json())
    log.info("privacy.rotated", **report.to_json())
    return report
