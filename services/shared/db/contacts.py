"""Stores and reads households' encrypted contact details and their wrapped data keys.

Ingest stores (it never reads back); the notifier reads, for a team member entitled to see.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.shared.crypto import ContactDetails, Vault
from services.shared.db.models import ContactDetail, HouseholdKey
from services.shared.errors import DecryptionFailed


@dataclass(frozen=True)
class StoredContact:
    event_id: str
    event_type: str
    domain: str
    event_date: dt.date
    details: ContactDetails


async def data_key_of(session: AsyncSession, vault: Vault, household_id: str) -> tuple[str, bytes]:
    """The household's data key, made on first use; concurrent first uses agree on one."""
    return (await data_keys_of(session, vault, [household_id]))[household_id]


async def data_keys_of(
    session: AsyncSession, vault: Vault, household_ids: Iterable[str]
) -> dict[str, tuple[str, bytes]]:
    """Each household's data key as (key id, key), made on first use; concurrent first uses
    agree on one.

    The rows are read FOR SHARE, so a retention purge cannot shred a key between this read
    and the insert of the details it seals; a key shredded just before is made anew.
    """
    wanted = sorted(set(household_ids))
    keys: dict[str, tuple[str, bytes]] = {}
    while missing := [h for h in wanted if h not in keys]:
        fresh = []
        for household_id in missing:
            key_id = str(uuid.uuid4())
            _, wrapped = vault.new_data_key(key_id)
            fresh.append(
                {
                    "household_id": household_id,
                    "key_id": key_id,
                    "wrapped_key": wrapped,
                    "master_key_id": vault.master_key_id,
                }
            )
        await session.execute(
            insert(HouseholdKey).on_conflict_do_nothing(index_elements=[HouseholdKey.household_id]),
            fresh,
        )
        rows = await session.execute(
            select(HouseholdKey.household_id, HouseholdKey.key_id, HouseholdKey.wrapped_key)
            .where(HouseholdKey.household_id.in_(missing))
            .with_for_update(read=True)
        )
        for row in rows:
            keys[row.household_id] = (row.key_id, vault.unwrap(row.key_id, row.wrapped_key))
    return keys


@dataclass(frozen=True)
class NewContact:
    """One accepted event's contact details, to be sealed under its household's key."""

    household_id: str
    event_id: str
    event_type: str
    domain: str
    event_date: dt.date
    details: ContactDetails


async def store_contacts(session: AsyncSession, vault: Vault, contacts: list[NewContact]) -> None:
    """Encrypts and stores accepted events' contact details; a re-sent event changes nothing."""
    if not contacts:
        return
    keys = await data_keys_of(session, vault, (c.household_id for c in contacts))
    rows = []
    for contact in contacts:
        key_id, data_key = keys[contact.household_id]
        rows.append(
            {
                "event_id": contact.event_id,
                "household_id": contact.household_id,
                "key_id": key_id,
                "event_type": contact.event_type,
                "domain": contact.domain,
                "event_date": contact.event_date,
                "sealed": Vault.seal_contact(data_key, contact.event_id, contact.details),
            }
        )
    await session.execute(
        insert(ContactDetail).on_conflict_do_nothing(index_elements=[ContactDetail.event_id]),
        rows,
    )


async def open_contacts(
    session: AsyncSession, vault: Vault, household_id: str, event_ids: Iterable[str]
) -> list[StoredContact]:
    """Decrypts the contact details stored with `event_ids`, newest event first.

    Raises DecryptionFailed when the household's data key is gone (erased or shredded).
    """
    rows = (
        await session.scalars(
            select(ContactDetail)
            .where(
                ContactDetail.household_id == household_id,
                ContactDetail.event_id.in_(list(event_ids)),
            )
            .order_by(ContactDetail.event_date.desc(), ContactDetail.event_id)
        )
    ).all()
    if not rows:
        return []
    key = await session.get(HouseholdKey, household_id)
    if key is None:
        raise DecryptionFailed("the household's data key no longer exists")
    data_key = vault.unwrap(key.key_id, key.wrapped_key)
    # Rows sealed under an earlier, shredded key of the household stay unreadable.
    return [
        StoredContact(
            r.event_id,
            r.event_type,
            r.domain,
            r.event_date,
            Vault.open_contact(data_key, r.event_id, r.sealed),
        )
        for r in rows
        if r.key_id == key.key_id
    ]


async def current_data_key(
    session: AsyncSession, vault: Vault, household_id: str
) -> tuple[str, bytes] | None:
    """The household's data key as (key id, key) for reading; None once it was shredded."""
    key = await session.get(HouseholdKey, household_id)
    if key is None:
        return None
    return key.key_id, vault.unwrap(key.key_id, key.wrapped_key)
