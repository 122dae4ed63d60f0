"""Household identity: address normalisation, pseudonyms, BSN check, deterministic ids."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.shared.config import PseudonymSettings
from services.shared.errors import ConfigurationError
from services.shared.identity import (
    Pseudonymiser,
    alert_id,
    bsn_is_valid,
    event_id,
    normalise_address,
    normalise_postcode,
)


@pytest.mark.parametrize("raw", ["7511 ab", "7511AB", " 7511ab ", "7511  Ab"])
def test_postcode_spellings_agree(raw: str) -> None:
    assert normalise_postcode(raw) == "7511AB"


@pytest.mark.parametrize("raw", ["0511AB", "751AB", "7511A", "7511 SS", "ABCD12", ""])
def test_invalid_postcodes_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="postcode"):
        normalise_postcode(raw)


def test_house_letter_spellings_are_one_household() -> None:
    a = normalise_address("7511AB", 12, "a", None)
    b = normalise_address("7511 ab", 12, None, "-A")
    c = normalise_address("7511ab", 12, "A", "")
    assert a == b == c
    assert normalise_address("7511AB", 12, None, "hs") != a


def test_pseudonym_is_keyed_and_versioned() -> None:
    address = normalise_address("7511AB", 12, None, None)
    one = Pseudonymiser(PseudonymSettings(pseudonym_secret=SecretStr("a" * 32)))
    other = Pseudonymiser(PseudonymSettings(pseudonym_secret=SecretStr("b" * 32)))
    rotated = Pseudonymiser(
        PseudonymSettings(pseudonym_secret=SecretStr("a" * 32), pseudonym_version=2)
    )
    assert one.household(address) == one.household(normalise_address("7511 ab", 12, "", ""))
    assert one.household(address) != other.household(address)
    assert one.household(address).startswith("hh1-")
    assert rotated.household(address).startswith("hh2-")
    assert "7511" not in one.household(address)


def test_production_refuses_the_development_secret() -> None:
    with pytest.raises(ConfigurationError, match="HUB_PSEUDONYM_SECRET"):
        PseudonymSettings(environment="production")


@pytest.mark.parametrize(
    "bsn,valid",
    [
        ("111222333", True),
        ("123456782", True),
        ("123456789", False),
        ("12345678", False),
        ("000000000", False),
        ("abcdefghi", False),
    ],
)
def test_bsn_eleven_check(bsn: str, valid: bool) -> None:
    assert bsn_is_valid(bsn) is valid


def test_ids_are_deterministic() -> None:
    assert event_id("p", "1") == event_id("p", "1") != event_id("p", "2")
    assert event_id("p", "1") != event_id("q", "1")
    assert alert_id("hh1-x", "twente-match", 1) == alert_id("hh1-x", "twente-match", 1)
    assert alert_id("hh1-x", "twente-match", 1) != alert_id("hh1-x", "twente-match", 2)
