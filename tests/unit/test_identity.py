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
    parse_house_number,
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
        PseudonymSettings(
            pseudonym_secret=SecretStr("c" * 32),
            pseudonym_version=2,
            pseudonym_previous_secrets={1: SecretStr("a" * 32)},
        )
    )
    assert one.household(address) == one.household(normalise_address("7511 ab", 12, "", ""))
    assert one.household(address) != other.household(address)
    assert one.household(address).startswith("hh1-")
    assert rotated.household(address).startswith("hh2-")
    assert "7511" not in one.household(address)
    # A rotation re-keys a stored pseudonym without the address, to what ingest now computes.
    assert rotated.rekey(one.household(address)) == rotated.household(address)
    assert rotated.rekey(one.person("111222333")) == rotated.person("111222333")
    with pytest.raises(ValueError, match="version 1"):
        rotated.rekey(rotated.household(address))


def test_a_new_version_needs_every_earlier_secret() -> None:
    with pytest.raises(ConfigurationError, match="version\\(s\\) 1, 2"):
        PseudonymSettings(pseudonym_secret=SecretStr("c" * 32), pseudonym_version=3)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("12a", (12, "A", "")),
        ("12 A", (12, "A", "")),
        ("12-a", (12, "A", "")),
        ("12 bis", (12, "", "BIS")),
        ("12-II", (12, "", "II")),
        ("12 hs", (12, "", "HS")),
        ("12-HS", (12, "", "HS")),
        ("12A-3", (12, "A", "3")),
        (" 7 ", (7, "", "")),
    ],
)
def test_written_house_numbers_split_the_dutch_way(
    written: str, expected: tuple[int, str, str]
) -> None:
    assert parse_house_number(written) == expected


def test_spellings_of_one_address_make_one_household() -> None:
    pseudonyms = Pseudonymiser(PseudonymSettings())
    same = {
        pseudonyms.household(normalise_address("7511 ab", *parse_house_number(written)))
        for written in ("12a", "12 A", "12-a")
    }
    assert len(same) == 1
    assert pseudonyms.household(normalise_address("7511AB", 12, "A", None)) in same
    hs = pseudonyms.household(normalise_address("7511AB", *parse_house_number("12 hs")))
    assert hs not in same


@pytest.mark.parametrize("written", ["", "a12", "12 toolong", "12 #"])
def test_unreadable_house_numbers_are_refused(written: str) -> None:
    with pytest.raises(ValueError, match="house number"):
        parse_house_number(written)


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


def test_a_letter_sent_as_addition_is_the_house_letter() -> None:
    written = normalise_address("7511AB", *parse_house_number("12a-2"))
    assert normalise_address("7511AB", 12, None, "a-2") == written
    assert normalise_address("7511AB", 12, None, "A") == normalise_address("7511AB", 12, "a", None)
