"""Turns a validated partner event into the Avro record published on its source topic."""

from __future__ import annotations

import datetime as dt
from typing import Any

from services.ingest.models import IDENTITY_FIELDS, PartnerEvent
from services.shared.crypto import ContactDetails
from services.shared.identity import Pseudonymiser, event_id, normalise_address


def build_record(
    event: PartnerEvent,
    partner_id: str,
    partner_type: str,
    pseudonyms: Pseudonymiser,
    received_at: dt.datetime,
) -> dict[str, Any]:
    """Drops the identity fields and puts the household and person pseudonyms in their place."""
    address = event.address
    household = pseudonyms.household(
        normalise_address(
            address.postcode,
            address.house_number,
            address.house_letter,
            address.house_number_addition,
        )
    )
    record = event.model_dump(exclude=set(IDENTITY_FIELDS))
    record.update(
        event_id=event_id(partner_id, event.partner_event_id),
        partner_id=partner_id,
        partner_type=partner_type,
        household_id=household,
        pseudonym_version=pseudonyms.version,
        person_id=pseudonyms.person(event.resident.bsn) if event.resident.bsn else None,
        received_at=received_at,
    )
    return record


def contact_details(event: PartnerEvent) -> ContactDetails:
    """What a wijkteam needs to visit; the BSN is not part of it (data minimisation)."""
    resident, address = event.resident, event.address
    return ContactDetails(
        name=resident.name,
        birth_date=resident.birth_date,
        phone=resident.phone,
        street=address.street,
        house_number=address.house_number,
        house_letter=address.house_letter,
        house_number_addition=address.house_number_addition,
        postcode=address.postcode,
        city=address.city,
    )
