"""The four event families partners publish: their schema, domain and event-time field."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class EventType(StrEnum):
    """The event types of the ingest API (`POST /v1/events/{type}`)."""

    DEBT_SIGNAL = "debt-signal"
    WVGGZ_REPORT = "wvggz-report"
    STREETTRIAGE_HANDOVER = "streettriage-handover"
    CARE_INDICATION = "care-indication"


class CreditorType(StrEnum):
    """The creditor types of DDAS, the national data standard for early debt signals."""

    ENERGIE = "ENERGIE"
    HUUR = "HUUR"
    HYPOTHEEK = "HYPOTHEEK"
    CAK_ZORGVERZEKERINGEN = "CAK_ZORGVERZEKERINGEN"
    ZORG = "ZORG"
    WATER = "WATER"
    DUO = "DUO"
    BELASTINGDIENST = "BELASTINGDIENST"
    CAK_EIGEN_BIJDRAGE = "CAK_EIGEN_BIJDRAGE"
    OVERIGE = "OVERIGE"
    DIENST_TOESLAGEN = "DIENST_TOESLAGEN"


class Domain(StrEnum):
    """Problem domains the matcher correlates across."""

    DEBT = "debt"
    WVGGZ = "wvggz"
    STREETTRIAGE = "streettriage"
    CARE = "care"


#: How a wijkteam worker reads a domain's name (explanations are in Dutch).
DOMAIN_NL: Final = {
    "debt": "schulden",
    "wvggz": "Wvggz-melding",
    "streettriage": "Streettriage",
    "care": "zorg en ondersteuning",
}


@dataclass(frozen=True)
class EventFamily:
    """Facts about one event type that every service agrees on."""

    type: EventType
    schema_name: str
    domain: Domain
    time_field: str


FAMILIES: Final[dict[EventType, EventFamily]] = {
    EventType.DEBT_SIGNAL: EventFamily(
        EventType.DEBT_SIGNAL, "nl.twente.hub.events.DebtSignal", Domain.DEBT, "signal_date"
    ),
    EventType.WVGGZ_REPORT: EventFamily(
        EventType.WVGGZ_REPORT, "nl.twente.hub.events.WvggzReport", Domain.WVGGZ, "report_date"
    ),
    EventType.STREETTRIAGE_HANDOVER: EventFamily(
        EventType.STREETTRIAGE_HANDOVER,
        "nl.twente.hub.events.StreettriageHandover",
        Domain.STREETTRIAGE,
        "handover_date",
    ),
    EventType.CARE_INDICATION: EventFamily(
        EventType.CARE_INDICATION,
        "nl.twente.hub.events.CareIndication",
        Domain.CARE,
        "indication_date",
    ),
}

BY_SCHEMA_NAME: Final[dict[str, EventFamily]] = {f.schema_name: f for f in FAMILIES.values()}

ALERT_SCHEMA_NAME: Final = "nl.twente.hub.alerts.HouseholdAlert"
PRIVACY_COMMAND_SCHEMA_NAME: Final = "nl.twente.hub.privacy.PrivacyCommand"
ALERT_OUTCOME_SCHEMA_NAME: Final = "nl.twente.hub.alerts.AlertOutcome"

#: Fields the hub sets on every source event; partners never send them.
HUB_ASSIGNED_FIELDS: Final = frozenset(
    {
        "event_id",
        "partner_id",
        "partner_type",
        "household_id",
        "pseudonym_version",
        "person_id",
        "received_at",
    }
)
