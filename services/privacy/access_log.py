"""Reads the access log: who saw which alert's personal details, when, and for what purpose."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.privacy.erase import linked_pseudonyms
from services.shared.db.models import AccessLogEntry


async def read_access_log(
    session: AsyncSession,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    household_id: str | None = None,
    alert_id: str | None = None,
) -> list[dict[str, Any]]:
    """Entries oldest first; a household is found under each of its rotated pseudonyms."""
    query = select(AccessLogEntry).order_by(AccessLogEntry.at, AccessLogEntry.id)
    if since is not None:
        query = query.where(AccessLogEntry.at >= since)
    if until is not None:
        query = query.where(AccessLogEntry.at < until)
    if household_id is not None:
        ids = await linked_pseudonyms(session, [household_id])
        query = query.where(AccessLogEntry.household_id.in_(ids))
    if alert_id is not None:
        query = query.where(AccessLogEntry.alert_id == alert_id)
    return [
        {
            "at": e.at.isoformat(),
            "member_id": e.member_id,
            "team_id": e.team_id,
            "alert_id": e.alert_id,
            "household_id": e.household_id,
            "purpose": e.purpose,
            "domains": list(e.domains),
            "action": e.action,
        }
        for e in await session.scalars(query)
    ]
