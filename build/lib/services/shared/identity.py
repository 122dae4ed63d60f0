"""Household and person identity: Dutch address normalisation and keyed, versioned pseudonyms.

A household is its address. The pseudonym is HMAC-SHA256 over the normalised address
(postcode, house number, letter, addition) with the regional secret; street and city are
not part of the key because postcode and house number already fix a Dutch address.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from typing import Final

from services.shared.config import PseudonymSettings

_POSTCODE: Final = re.compile(r"^\s*([1-9][0-9]{3})\s*([A-Za-z]{2})\s*$")
_ADDITION_CLEAN: Final = re.compile(r"[\s\-/]+")
#: Namespace for deterministic ids: event ids and alert ids are UUIDv5 in it.
HUB_NAMESPACE: Final = uuid.UUID("6f1d3c52-6a57-4c5e-9a55-2d1f7b0e6b11")


@dataclass(frozen=True)
class NormalisedAddress:
    """The parts of a Dutch address that identify a household."""

    postcode: str
    house_number: int
    house_letter: str
    addition: str

    def key(self) -> str:
        return f"{self.postcode}|{self.house_number}|{self.house_letter}|{self.addition}"


def normalise_postcode(raw: str) -> str:
    """`7511 ab` and `7511AB` both become `7511AB`; anything else is refused."""
    match = _POSTCODE.match(raw)
    if match is None:
        raise ValueError("postcode must be four digits (not starting with 0) and two letters")
    letters = match[2].upper()
    if letters in {"SA", "SD", "SS"}:
        raise ValueError("postcode letters SA, SD and SS are not used in the Netherlands")
    return match[1] + letters


def normalise_address(
    postcode: str, house_number: int, house_letter: str | None, addition: str | None
) -> NormalisedAddress:
    """Brings the identifying parts of an address into one canonical form.

    A letter given inside the addition (`12-a` sent as number 12, addition `a`) is the
    same household as letter `A`: a single letter addition is read as the house letter.
    """
    if house_number < 1 or house_number > 99999:
        raise ValueError("house number must be between 1 and 99999")
    letter = (house_letter or "").strip().upper()
    extra = _ADDITION_CLEAN.sub("", (addition or "")).upper()
    if not letter and len(extra) == 1 and extra.isalpha():
        letter, extra = extra, ""
    if len(letter) > 1 or (letter and not letter.isalpha()):
        raise ValueError("house letter must be a single letter")
    return NormalisedAddress(normalise_postcode(postcode), house_number, letter, extra)


class Pseudonymiser:
    """Makes the keyed pseudonyms that stand for households and persons on every topic."""

    def __init__(self, settings: PseudonymSettings) -> None:
        self._key = settings.pseudonym_secret.get_secret_value().encode()
        self.version = settings.pseudonym_version

    def _mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256)
        return digest.hexdigest()[:40]

    def household(self, address: NormalisedAddress) -> str:
        return f"hh{self.version}-{self._mac('household', address.key())}"

    def person(self, bsn: str) -> str:
        return f"ps{self.version}-{self._mac('person', bsn)}"


def bsn_is_valid(bsn: str) -> bool:
    """The BSN eleven-check: nine digits, weights 9..2 and -1, sum divisible by 11."""
    if not re.fullmatch(r"\d{9}", bsn):
        return False
    total = sum(int(d) * w for d, w in zip(bsn[:8], range(9, 1, -1), strict=True))
    total -= int(bsn[8])
    return total % 11 == 0 and bsn != "000000000"


def event_id(partner_id: str, partner_event_id: str) -> str:
    """The hub's id of a partner event: the same partner event always gets the same id."""
    return str(uuid.uuid5(HUB_NAMESPACE, f"event:{partner_id}:{partner_event_id}"))


def alert_id(household_id: str, rule_id: str, episode: int) -> str:
    return str(uuid.uuid5(HUB_NAMESPACE, f"alert:{household_id}:{rule_id}:{episode}"))
