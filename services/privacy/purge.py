"""Applies the retention policy: expired events stop counting, expired alerts lose their
personal details, and a household with no live data loses its data key (crypto-shredding).

One database transaction per run; the matcher's PURGE commands are on the broker before it
commits, so a failed run changes nothing in the database and can simply run again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import and_, case, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.privacy.commands import CommandSender, record_run
from services.shared.config import HubSettings
from services.shared.db.models import (
    Alert,
    AlertNote,
    ContactDetail,
    Contribution,
    HouseholdKey,
    IdempotencyKey,
    IngestReceipt,
    Upload,
)
from services.shared.events import FAMILIES, EventType
from services.shared.logging import get_logger

log = get_logger("hub.privacy")


@dataclass(frozen=True)
class PurgeReport:
    as_of: str
    cutoffs: dict[str, str]
    alerts_expired: list[str]
    notes_deleted: int
    contacts_deleted: dict[str, int]
    households_purged_in_matcher: int
    keys_shredded: int
    #: Ingest's bookkeeping past its retention: receipts of events (a later repeat counts
    #: as new), uploads with their problem reports, and Idempotency-Keys with their answers.
    receipts_deleted: int
    uploads_deleted: int
    idempotency_keys_deleted: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def cutoffs(settings: HubSettings, as_of: dt.date) -> dict[str, str]:
    """Per domain, the first event date that still counts on `as_of`."""
    return {
        FAMILIES[t].domain.value: (
            as_of - dt.timedelta(days=settings.retention_event_days[t.value])
        ).isoformat()
        for t in EventType
    }


async def purge(
    session: AsyncSession, sender: CommandSender, settings: HubSettings, as_of: dt.date
) -> PurgeReport:
    """Runs inside the caller's transaction; the caller commits."""
    started_at = dt.datetime.now(dt.UTC)
    limits = cutoffs(settings, as_of)
    expired_event = or_(
        *(
            and_(
                ContactDetail.domain == domain, ContactDetail.event_date < dt.date.fromisoformat(c)
            )
            for domain, c in limits.items()
        )
    )

    per_outcome = settings.retention_closed_alert_days
    closed_days: Any = (
        case(
            *((Alert.outcome == outcome, days) for outcome, days in per_outcome.items()),
            else_=settings.retention_closed_alert_default_days,
        )
        if per_outcome
        else settings.retention_closed_alert_default_days
    )
    as_of_start = dt.datetime.combine(as_of, dt.time(), dt.UTC)
    alerts_expired = list(
        await session.scalars(
            update(Alert)
            .where(
                Alert.details_removed_at.is_(None),
                or_(
                    and_(
                        Alert.status != "closed",  # open, or claimed but not closed
                        Alert.raised_on
                        < as_of - dt.timedelta(days=settings.retention_open_alert_days),
                    ),
                    and_(
                        Alert.closed_at.is_not(None),
                        Alert.closed_at < as_of_start - func.make_interval(0, 0, 0, closed_days),
                    ),
                ),
            )
            .values(details_removed_at=func.now())
            .returning(Alert.alert_id)
        )
    )

    # Notes are free text about the household: they go with the alert's personal details.
    notes_deleted = len(
        (
            await session.execute(
                delete(AlertNote)
                .where(AlertNote.alert_id.in_(alerts_expired))
                .returning(AlertNote.id)
            )
        ).all()
    )

    # Every household with an expired event: the matcher drops those events, whether or not
    # a live alert still keeps their contact details.
    households = list(
        await session.scalars(select(ContactDetail.household_id).where(expired_event).distinct())
    )
    in_live_alert = exists().where(
        Contribution.event_id == ContactDetail.event_id,
        Contribution.alert_id == Alert.alert_id,
        Alert.details_removed_at.is_(None),
    )
    deleted = (
        await session.execute(
            delete(ContactDetail)
            .where(expired_event, ~in_live_alert)
            .returning(ContactDetail.event_type)
        )
    ).all()
    contacts_deleted: dict[str, int] = {}
    for (event_type,) in deleted:
        contacts_deleted[event_type] = contacts_deleted.get(event_type, 0) + 1

    # A key is an orphan when it seals nothing: no contact details and no note of a live
    # alert. Keys a concurrent ingest holds FOR SHARE are skipped; the next run takes them.
    sealing = or_(
        exists().where(ContactDetail.household_id == HouseholdKey.household_id),
        exists().where(
            AlertNote.alert_id == Alert.alert_id,
            Alert.household_id == HouseholdKey.household_id,
            Alert.details_removed_at.is_(None),
        ),
    )
    orphans = list(
        await session.scalars(
            select(HouseholdKey.household_id).where(~sealing).with_for_update(skip_locked=True)
        )
    )
    if orphans:
        # Checked again while the rows are locked: an ingest that stored details after this
        # statement's snapshot keeps its key.
        await session.execute(
            delete(HouseholdKey).where(HouseholdKey.household_id.in_(orphans), ~sealing)
        )

    receipts_deleted, uploads_deleted, keys_deleted = await _purge_ingest_bookkeeping(
        session, settings, as_of_start
    )

    await sender.send("PURGE", households, "retention", cutoffs=limits)
    report = PurgeReport(
        as_of=as_of.isoformat(),
        cutoffs=limits,
        alerts_expired=sorted(alerts_expired),
        notes_deleted=notes_deleted,
        contacts_deleted=contacts_deleted,
        households_purged_in_matcher=len(households),
        keys_shredded=len(orphans),
        receipts_deleted=receipts_deleted,
        uploads_deleted=uploads_deleted,
        idempotency_keys_deleted=keys_deleted,
    )
    summary = report.to_json()
    record_run(session, "purge", started_at, summary, reference="retention")
    log.info(
        "privacy.purged",
        reason="retention",
        as_of=report.as_of,
        alerts_expired=len(alerts_expired),
        alert_ids=report.alerts_expired,
        contacts_deleted=contacts_deleted,
        notes_deleted=notes_deleted,
        households_purged_in_matcher=len(households),
        keys_shredded=len(orphans),
        receipts_deleted=receipts_deleted,
        uploads_deleted=uploads_deleted,
        idempotency_keys_deleted=keys_deleted,
    )
    return report


async def _purge_ingest_bookkeeping(
    session: AsyncSession, settings: HubSettings, as_of_start: dt.datetime
) -> tuple[int, int, int]:
    """Receipts go with their event type's retention; uploads and Idempotency-Keys after
    `retention_upload_days`. Returns how many of each were deleted."""
    receipts = await session.execute(
        delete(IngestReceipt)
        .where(
            or_(
                *(
                    and_(
                        IngestReceipt.event_type == t.value,
                        IngestReceipt.received_at
                        < as_of_start - dt.timedelta(days=settings.retention_event_days[t.value]),
                    )
                    for t in EventType
                )
            )
        )
        .returning(IngestReceipt.event_id)
    )
    uploads_cutoff = as_of_start - dt.timedelta(days=settings.retention_upload_days)
    uploads = await session.execute(
        delete(Upload).where(Upload.created_at < uploads_cutoff).returning(Upload.upload_id)
    )
    keys = await session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.created_at < uploads_cutoff)
        .returning(IdempotencyKey.key)
    )
    return len(receipts.all()), len(uploads.all()), len(keys.all())
