"""Household and person identity: Dutch address normalisation and keyed, versioned pseudonyms.

A household is its address. The pseudonym is HMAC-SHA256 over the normalised address
(postcode, house number, letter, addition) with the regional secret; street and city are
not part of the key because postcode and house number already fix a Dutch address.

Pseudonyms are chained over the secret's versions: version 1 is the HMAC of the address,
version n the HMAC (with secret n) of the version n-1 pseudonym. A rotation can therefore
re-key every stored pseudonym without knowing a single address (`Pseudonymiser.rekey`).
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
_HOUSE_NUMBER: Final = re.compile(r"^\s*(\d{1,5})\s*(.*?)\s*$")
#: A single letter, alone or followed by a separated or numeric addition: `a`, `A-2`, `a2`.
_LETTER_FIRST: Final = re.compile(r"^[\s\-/]*([A-Za-z])(?:[\s\-/]+(.+)|(\d.*))?$")
_PREFIXES: Final = {"household": "hh", "person": "ps"}
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


def parse_house_number(raw: str) -> tuple[int, str, str]:
    """Splits a written house number into number, letter and addition.

    `12a`, `12 A` and `12-a` give (12, "A", ""); `12 bis`, `12-II` and `12 hs` give the
    addition `BIS`, `II`, `HS`; `12A-3` gives (12, "A", "3").
    """
    match = _HOUSE_NUMBER.match(raw)
    if match is None:
        raise ValueError("house number must start with its number, for example 12, 12a or 12-II")
    number, rest = int(match[1]), match[2]
    letter = _LETTER_FIRST.match(rest)
    if letter is not None:
        return number, letter[1].upper(), _clean_addition(letter[2] or letter[3] or "")
    return number, "", _clean_addition(rest)


def _clean_addition(raw: str) -> str:
    extra = _ADDITION_CLEAN.sub("", raw).upper()
    if len(extra) > 4 or (extra and not extra.isalnum()):
        raise ValueError("house number addition must be at most four letters or digits")
    return extra


def normalise_name(raw: str) -> str:
    """Street and city names: whitespace collapsed; case is kept but never compared."""
    return " ".join(raw.split())


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
    extra = _clean_addition(addition or "")
    if not letter and (first := _LETTER_FIRST.match(addition or "")) is not None:
        # `12` with addition `a-2` is the same household as `12a-2`.
        letter, extra = first[1].upper(), _clean_addition(first[2] or first[3] or "")
    if len(letter) > 1 or (letter and not letter.isalpha()):
        raise ValueError("house letter must be a single letter")
    return NormalisedAddress(normalise_postcode(postcode), house_number, letter, extra)


class Pseudonymiser:
    """Makes the keyed pseudonyms that stand for households and persons on every topic."""

    def __init__(self, settings: PseudonymSettings) -> None:
        self._secrets = settings.secrets()
        self.version = settings.pseudonym_version

    def _step(self, version: int, kind: str, value: str) -> str:
        digest = hmac.new(self._secrets[version], f"{kind}:{value}".encode(), hashlib.sha256)
        return f"{_PREFIXES[kind]}{version}-{digest.hexdigest()[:40]}"

    def _chain(self, kind: str, value: str) -> str:
        for version in self._secrets:
            value = self._step(version, kind, value)
        return value

    def household(self, address: NormalisedAddress) -> str:
        return self._chain("household", address.key())

    def household_versions(self, address: NormalisedAddress) -> list[str]:
        """The household's pseudonym under every secret version, oldest first (for erasure)."""
        value, versions = address.key(), []
        for version in self._secrets:
            value = self._step(version, "household", value)
            versions.append(value)
        return versions

    def person(self, bsn: str) -> str:
        return self._chain("person", bsn)

    def rekey(self, pseudonym: str) -> str:
        """The current version's pseudonym for a pseudonym of the version just before it."""
        kind = {prefix: kind for kind, prefix in _PREFIXES.items()}.get(pseudonym[:2])
        version, _, digest = pseudonym[2:].partition("-")
        if kind is None or not digest or version != str(self.version - 1):
            raise ValueError(f"not a version {self.version - 1} pseudonym")
        return self._step(self.version, kind, pseudonym)


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
