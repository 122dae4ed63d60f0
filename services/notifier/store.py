"""Writes alerts into PostgreSQL: an upsert that only ever moves an alert to a newer version."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import case, func, literal_column, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier.channels import NoticeKind
from services.shared.correlation import NO_TRACE, Trace
from services.shared.db.models import Alert, Contribution

_ALERT_COLUMNS = (
    "household_id",
    "municipality_code",
    "wijk_code",
    "rule_id",
    "rule_version",
    "rule_title",
    "episode",
    "version",
    "priority",
    "purpose",
    "legal_basis",
    "raised_on",
    "deadline",
    "deadline_rule",
    "domains",
    "condition",
    "explanation",
    "undisclosed_domains",
)


async def upsert_alert(
    session: AsyncSession, alert: dict[str, Any], trace: Trace = NO_TRACE
) -> NoticeKind | None:
    """Stores `alert` unless a row at the same or a newer version exists, with the trace of
    the event behind this version (its correlation id and acceptance time).

    Returns "raised" when the alert is new, "updated" when a newer version replaced the row,
    None when nothing was written (a replay, or an older version arriving late).

    The caller commits: the alert row and its contributions land together or not at all.
    """
    values = {c: alert[c] for c in _ALERT_COLUMNS}
    values["correlation_id"] = trace.correlation_id
    values["accepted_at"] = (
        dt.datetime.fromtimestamp(trace.accepted_at, dt.UTC)
        if trace.accepted_at is not None
        else None
    )
    statement: Any = (
        insert(Alert)
        .values(alert_id=alert["alert_id"], **values)
        .on_conflict_do_update(
            index_elements=[Alert.alert_id],
            # A newer version comes with new events and their details: no longer removed.
            set_={
                **values,
                "updated_at": func.now(),
                "details_removed_at": None,
                # A new deadline is escalated again when it passes.
                "overdue_at": case(
                    (Alert.deadline != alert["deadline"], None), else_=Alert.overdue_at
                ),
            },
            where=Alert.version < alert["version"],
        )
        # xmax is 0 for a row this statement inserted, not for one it updated.
        .returning(literal_column("xmax = 0"))
    )
    inserted = (await session.execute(statement)).scalar_one_or_none()
    if inserted is None:
        return None
    if alert["contributions"]:
        await session.execute(
            insert(Contribution)
            .values([{"alert_id": alert["alert_id"], **c} for c in alert["contributions"]])
            .on_conflict_do_nothing()
        )
    return "raised" if inserted else "updated"


async def count_alerts(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(Alert))).scalar_one()
