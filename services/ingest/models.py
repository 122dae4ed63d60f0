"""What partners send over HTTP, per event type.

Each model has the fields of its Avro schema that partners provide (a test proves they agree
field by field) plus the identity a partner knows in clear: `resident` and `address`. Identity
never reaches a topic: ingest turns the address into the household pseudonym and a BSN into a
person pseudonym.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.shared.events import CreditorType, EventType
from services.shared.identity import (
    bsn_is_valid,
    normalise_name,
    normalise_postcode,
    parse_house_number,
)
from services.shared.region import MUNICIPALITIES, WIJK_CODE, wijk_belongs_to


class CrisisKind(StrEnum):
    EVICTION = "EVICTION"
    ENERGY_CUTOFF = "ENERGY_CUTOFF"
    WATER_CUTOFF = "WATER_CUTOFF"
    HEALTH_INSURANCE_END = "HEALTH_INSURANCE_END"


class ReporterCategory(StrEnum):
    FAMILY = "FAMILY"
    NEIGHBOUR = "NEIGHBOUR"
    POLICE = "POLICE"
    CARE_PROVIDER = "CARE_PROVIDER"
    MUNICIPALITY = "MUNICIPALITY"
    HOUSING_CORPORATION = "HOUSING_CORPORATION"
    OTHER = "OTHER"


class HandoverOutcome(StrEnum):
    HANDED_TO_SOCIAL_DOMAIN = "HANDED_TO_SOCIAL_DOMAIN"
    REFERRED_TO_GGZ = "REFERRED_TO_GGZ"
    REFERRED_TO_GP = "REFERRED_TO_GP"
    NO_FOLLOW_UP_NEEDED = "NO_FOLLOW_UP_NEEDED"


class ProblemArea(StrEnum):
    FINANCES = "FINANCES"
    HOUSING = "HOUSING"
    ADDICTION = "ADDICTION"
    PSYCHOSOCIAL = "PSYCHOSOCIAL"
    SOCIAL_ISOLATION = "SOCIAL_ISOLATION"
    OTHER = "OTHER"


class CareKind(StrEnum):
    WMO = "WMO"
    WIJKVERPLEGING = "WIJKVERPLEGING"


class CareMessageType(StrEnum):
    WMO301_ALLOCATION = "WMO301_ALLOCATION"
    WMO305_START = "WMO305_START"
    WMO307_STOP = "WMO307_STOP"
    WMO315_REQUEST = "WMO315_REQUEST"
    WMO317_CHANGE_REQUEST = "WMO317_CHANGE_REQUEST"
    ZVW_INDICATION = "ZVW_INDICATION"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str) -> str:
    # PostgreSQL text cannot hold NUL, and no name, street or id has a line break or a tab.
    if _CONTROL.search(value):
        raise ValueError("must not hold control characters (NUL, tab, line breaks)")
    return value


#: Free text of a partner: printable characters only.
Text = Annotated[str, AfterValidator(_printable)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class Resident(_Strict):
    """The person the event is about, as the partner knows them. Never published."""

    name: Text = Field(min_length=1, max_length=200)
    birth_date: dt.date
    bsn: str | None = Field(
        None, description="Only from partners allowed to use the BSN (health insurers)."
    )
    phone: str | None = Field(
        None,
        pattern=r"^\+?[0-9][0-9 \-]{5,18}[0-9]$",
        description="Telephone number for the outreach visit; stored encrypted only.",
    )

    @field_validator("birth_date")
    @classmethod
    def _birth_date_in_past(cls, value: dt.date) -> dt.date:
        if value > dt.date.today() or value.year < 1900:
            raise ValueError("birth date must lie between 1900 and today")
        return value

    @field_validator("bsn")
    @classmethod
    def _bsn_eleven_check(cls, value: str | None) -> str | None:
        if value is not None and not bsn_is_valid(value):
            raise ValueError("BSN must be nine digits that pass the eleven-check")
        return value


class Address(_Strict):
    """The household's address: postcode and house number make the household pseudonym.

    `house_number` may be written whole (`12a`, `12-II`, `12 hs`); it is split into number,
    letter and addition, which must then not be sent separately as well.
    """

    street: Text = Field(min_length=1, max_length=200)
    house_number: int = Field(ge=1, le=99999)
    house_letter: str | None = Field(None, max_length=1, pattern=r"^[A-Za-z]$")
    house_number_addition: str | None = Field(None, max_length=4)
    postcode: str
    city: Text = Field(min_length=1, max_length=100)

    @model_validator(mode="before")
    @classmethod
    def _split_written_house_number(cls, data: object) -> object:
        if not isinstance(data, dict) or not isinstance(data.get("house_number"), str):
            return data
        written = data["house_number"]
        if written.strip().isdigit():
            return data
        number, letter, addition = parse_house_number(written)
        if (letter and data.get("house_letter")) or (
            addition and data.get("house_number_addition")
        ):
            raise ValueError(
                "house_number already holds a letter or addition; do not send them twice"
            )
        return {
            **data,
            "house_number": number,
            "house_letter": letter or data.get("house_letter"),
            "house_number_addition": addition or data.get("house_number_addition"),
        }

    @field_validator("postcode")
    @classmethod
    def _postcode(cls, value: str) -> str:
        return normalise_postcode(value)

    @field_validator("house_number_addition")
    @classmethod
    def _addition(cls, value: str | None) -> str | None:
        if value is not None:
            parse_house_number(f"1 {value}")  # refuses what no Dutch addition looks like
        return value

    @field_validator("street", "city")
    @classmethod
    def _name(cls, value: str) -> str:
        return normalise_name(value)


MunicipalityCode = Annotated[str, Field(pattern=r"^GM\d{4}$")]
#: The partner's reference for an event. It travels on the hub's topics as it is, so it is a
#: record number, never a name, a street or free text (which a space would allow).
PartnerEventId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/#-]*$",
        description=(
            "The partner's own reference for this event: letters, digits and . _ : / # - "
            "only, no spaces. Never a BSN, a name or a birth date: it is kept as it is."
        ),
    ),
]


class PartnerEvent(_Strict):
    """What every partner event carries: its id, who and where it is about."""

    partner_event_id: PartnerEventId
    resident: Resident
    address: Address
    municipality_code: MunicipalityCode = Field(
        description="CBS code of the household's municipality (one of the 14 in Twente)."
    )
    wijk_code: str | None = Field(None, description="CBS wijk code, WK + 6 digits.")

    @field_validator("municipality_code")
    @classmethod
    def _twente(cls, value: str) -> str:
        if value not in MUNICIPALITIES:
            raise ValueError("not one of the 14 Twente municipalities (CBS GM code)")
        return value

    # Rules between fields are field validators of the later field, so a refusal names a
    # field (pydantic reports a model validator's error at the whole object).
    @field_validator("wijk_code")
    @classmethod
    def _wijk_in_municipality(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if not WIJK_CODE.match(value):
            raise ValueError("must be WK + 6 digits (CBS wijk code)")
        municipality = info.data.get("municipality_code")
        if municipality is not None and not wijk_belongs_to(value, municipality):
            raise ValueError("lies outside the municipality_code")
        return value


class DebtSignalIn(PartnerEvent):
    """An early debt signal following DDAS."""

    creditor_type: CreditorType
    creditor_name: Text = Field(min_length=1, max_length=200)
    amount_eur: int = Field(ge=1, le=10_000_000, description="Arrear in whole euros.")
    arrear_start_date: dt.date
    signal_date: dt.date
    crisis: bool = False
    crisis_kind: CrisisKind | None = None
    warm_handover: bool = False
    missed_payments: int | None = Field(
        None,
        ge=1,
        le=600,
        description="Number of missed payment terms (DDAS), where the creditor knows it.",
    )

    @field_validator("signal_date")
    @classmethod
    def _not_before_arrear(cls, value: dt.date, info: ValidationInfo) -> dt.date:
        start = info.data.get("arrear_start_date")
        if start is not None and start > value:
            raise ValueError("must not lie before arrear_start_date")
        return value

    @field_validator("crisis_kind")
    @classmethod
    def _only_in_crisis(cls, value: CrisisKind | None, info: ValidationInfo) -> CrisisKind | None:
        if value is not None and info.data.get("crisis") is False:
            raise ValueError("only allowed when crisis is true")
        return value


class WvggzReportIn(PartnerEvent):
    """A non-acute Wvggz report; the reporter is named only by category."""

    report_date: dt.date
    reporter_category: ReporterCategory


class StreettriageHandoverIn(PartnerEvent):
    handover_date: dt.date
    outcome: HandoverOutcome
    problem_areas: list[ProblemArea] = Field(default_factory=list, max_length=6)


class CareIndicationIn(PartnerEvent):
    indication_date: dt.date
    care_kind: CareKind
    message_type: CareMessageType
    product_category: str | None = Field(None, pattern=r"^\d{2}$")

    @field_validator("message_type")
    @classmethod
    def _message_fits_kind(cls, value: CareMessageType, info: ValidationInfo) -> CareMessageType:
        kind = info.data.get("care_kind")
        if kind is not None and (kind is CareKind.WIJKVERPLEGING) != (
            value is CareMessageType.ZVW_INDICATION
        ):
            raise ValueError("WIJKVERPLEGING goes with ZVW_INDICATION, WMO with an iWmo message")
        return value


MODELS: dict[EventType, type[PartnerEvent]] = {
    EventType.DEBT_SIGNAL: DebtSignalIn,
    EventType.WVGGZ_REPORT: WvggzReportIn,
    EventType.STREETTRIAGE_HANDOVER: StreettriageHandoverIn,
    EventType.CARE_INDICATION: CareIndicationIn,
}

IDENTITY_FIELDS = frozenset({"resident", "address"})
