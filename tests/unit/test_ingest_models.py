"""What ingest's models refuse, and that a refusal never repeats what the partner sent."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.ingest.models import DebtSignalIn
from services.ingest.uploads import problems_of
from tests.unit.test_intake_digest import EVENT


def problems(**changes: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as refused:
        DebtSignalIn.model_validate({**EVENT, **changes})
    return [(p.field, p.message) for p in problems_of(refused.value)]


@pytest.mark.parametrize("reference", ["DS-1", "ENX-2025/000123#2", "a", "2026.11:77_x"])
def test_a_partner_reference_is_letters_digits_and_punctuation(reference: str) -> None:
    assert DebtSignalIn.model_validate({**EVENT, "partner_event_id": reference})


@pytest.mark.parametrize(
    "reference", ["Jan Jansen", "Teststraat 12", "-leading", "#1", "ü-1", "a;b", "x" * 101]
)
def test_anything_else_as_partner_reference_is_refused_naming_it(reference: str) -> None:
    (problem,) = problems(partner_event_id=reference)
    assert problem[0] == "partner_event_id"
    assert reference not in problem[1]


def test_an_unknown_field_is_named_when_it_is_a_plain_name() -> None:
    assert problems(resident={**EVENT["resident"], "nickname": "x"}) == [
        ("resident.nickname", "Extra inputs are not permitted")
    ]


def test_an_unknown_key_that_is_no_plain_name_is_not_repeated() -> None:
    canary = "Canary Sleutelpersoon 01-02-1970"
    found = problems(resident={**EVENT["resident"], canary: "x"}, **{"Teststraat 9": 1})
    assert sorted(found) == [
        ("body", "holds a field this type does not have (its name is not repeated here)"),
        ("resident", "holds a field this type does not have (its name is not repeated here)"),
    ]
    assert canary not in repr(found) and "Teststraat" not in repr(found)
