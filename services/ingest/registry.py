"""The partner registry in PostgreSQL: who may publish which event types, whether they may send
a BSN, and their API keys, kept as SHA-256 digests only, with rotation over an overlap period.

A partner's type fixes what it may publish at all: a creditor sends debt signals, the GGD
meldfunctie Wvggz reports, Streettriage its handovers, a Wmo office or a district nurse care
indications. A BSN only comes from partners that may process it (not housing, energy or water
companies, DESIGN.md §2).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.shared.db.models import Partner, PartnerApiKey
from services.shared.errors import ConfigurationError
from services.shared.events import CreditorType, EventType
from services.shared.tokens import issue_token, token_digest

#: The DDAS creditor types: they publish debt signals.
CREDITOR_TYPES: Final = frozenset(t.value for t in CreditorType)
#: Partner type -> the event types a partner of that type may be allowed to publish.
ALLOWED_TYPES: Final[dict[str, frozenset[EventType]]] = {
    **{t: frozenset({EventType.DEBT_SIGNAL}) for t in CREDITOR_TYPES},
    "GGD_MELDFUNCTIE": frozenset({EventType.WVGGZ_REPORT}),
    "STREETTRIAGE": frozenset({EventType.STREETTRIAGE_HANDOVER}),
    "WMO_LOKET": frozenset({EventType.CARE_INDICATION}),
    "WIJKVERPLEGING": frozenset({EventType.CARE_INDICATION}),
}
#: Creditors that may not use the BSN (housing, energy, water and other private companies).
NO_BSN: Final = frozenset({"HUUR", "HYPOTHEEK", "ENERGIE", "WATER", "OVERIGE"})


#: What a partner id looks like; an id of any other shape names no partner.
PARTNER_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,63}$"


class PartnerSpec(BaseModel):
    """A partner as `hub partners add` registers it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partner_id: str = Field(pattern=PARTNER_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    partner_type: str
    event_types: list[EventType] = Field(min_length=1)
    may_send_bsn: bool = False

    @model_validator(mode="after")
    def _fits_its_role(self) -> PartnerSpec:
        allowed = ALLOWED_TYPES.get(self.partner_type)
        if allowed is None:
            known = ", ".join(sorted(ALLOWED_TYPES))
            raise ValueError(f"partner_type {self.partner_type!r} is not one of {known}")
        beyond = sorted(t.value for t in set(self.event_types) - allowed)
        if beyond:
            raise ValueError(
                f"a {self.partner_type} partner cannot publish {', '.join(beyond)}; it may "
                f"publish {', '.join(sorted(t.value for t in allowed))}"
            )
        if self.may_send_bsn and self.partner_type in NO_BSN:
            raise ValueError(f"a {self.partner_type} partner may not send a BSN")
        return self


@dataclass(frozen=True)
class RegisteredPartner:
    """An authenticated partner: what ingest checks each event against."""

    partner_id: str
    partner_type: str
    event_types: frozenset[EventType]
    may_send_bsn: bool


async def authenticate(session: AsyncSession, key: str) -> RegisteredPartner | None:
    """The active partner holding `key`, if the key has not expired."""
    row = (
        await session.execute(
            select(Partner)
            .join(PartnerApiKey, PartnerApiKey.partner_id == Partner.partner_id)
            .where(
                PartnerApiKey.key_sha256 == token_digest(key),
                Partner.active,
                or_(PartnerApiKey.expires_at.is_(None), PartnerApiKey.expires_at > func.now()),
            )
        )
    ).scalar_one_or_none()
    return _registered(row)


async def active_partner(session: AsyncSession, partner_id: str) -> RegisteredPartner | None:
    """The partner with this id, if it is active (Kafka intake names partners, not keys)."""
    row = await session.get(Partner, partner_id)
    return _registered(row) if row is not None and row.active else None


def _registered(row: Partner | None) -> RegisteredPartner | None:
    if row is None:
        return None
    return RegisteredPartner(
        row.partner_id,
        row.partner_type,
        frozenset(EventType(t) for t in row.event_types),
        row.may_send_bsn,
    )


async def add_partner(session: AsyncSession, spec: PartnerSpec, key: str | None = None) -> str:
    """Registers the partner with a first API key and returns the key: shown once, kept as a
    digest. With `key` given (tests, the demo) that key is used. A partner id that exists is
    refused: `rotate-key` gives an existing partner a new key."""
    if await session.get(Partner, spec.partner_id) is not None:
        raise ConfigurationError(f"partner {spec.partner_id!r} exists; use rotate-key")
    key = issue_token(key, "an API key")
    session.add(
        Partner(
            partner_id=spec.partner_id,
            name=spec.name,
            partner_type=spec.partner_type,
            event_types=[t.value for t in spec.event_types],
            may_send_bsn=spec.may_send_bsn,
        )
    )
    await session.flush()
    await session.execute(
        insert(PartnerApiKey).values(partner_id=spec.partner_id, key_sha256=token_digest(key))
    )
    return key


async def ensure_partner(session: AsyncSession, spec: PartnerSpec, key: str) -> None:
    """Registers the partner, or brings it up to `spec`, with `key` among its keys: for the
    demo and the tests, which hand out known keys and may run against a database again."""
    values = {
        "name": spec.name,
        "partner_type": spec.partner_type,
        "event_types": [t.value for t in spec.event_types],
        "may_send_bsn": spec.may_send_bsn,
        "active": True,
    }
    await session.execute(
        insert(Partner)
        .values(partner_id=spec.partner_id, **values)
        .on_conflict_do_update(index_elements=[Partner.partner_id], set_=values)
    )
    await session.execute(
        insert(PartnerApiKey)
        .values(partner_id=spec.partner_id, key_sha256=token_digest(key))
        .on_conflict_do_nothing()
    )


async def rotate_key(session: AsyncSession, partner_id: str, overlap: dt.timedelta) -> str:
    """A new API key for the partner; its current keys keep working for `overlap` (so the
    partner can switch without a gap), then stop. Returns the new key, shown once."""
    partner = await session.get(Partner, partner_id, with_for_update=True)
    if partner is None:
        raise ConfigurationError(f"no partner {partner_id!r}")
    until = func.now() + overlap
    await session.execute(
        update(PartnerApiKey)
        .where(
            PartnerApiKey.partner_id == partner_id,
            or_(PartnerApiKey.expires_at.is_(None), PartnerApiKey.expires_at > until),
        )
        .values(expires_at=until)
    )
    key = issue_token(None, "an API key")
    await session.execute(
        insert(PartnerApiKey).values(partner_id=partner_id, key_sha256=token_digest(key))
    )
    return key


async def set_partner_active(session: AsyncSession, partner_id: str, active: bool) -> bool:
    """Disables (every key stops at once) or enables a partner; False when unknown."""
    result = await session.execute(
        update(Partner)
        .where(Partner.partner_id == partner_id)
        .values(active=active)
        .returning(Partner.partner_id)
    )
    return result.scalar_one_or_none() is not None
