"""The content digest that tells a partner's repeat from another event under the same id."""

from __future__ import annotations

from typing import Any

from services.ingest.intake import content_digest
from services.ingest.models import DebtSignalIn
from services.shared.events import EventType

EVENT: dict[str, Any] = {
    "partner_event_id": "huur-2026-000123",
    "resident": {"name": "Canary Digestpersoon", "birth_date": "1970-01-01"},
    "address": {
        "street": "Teststraat",
        "house_number": 12,
        "postcode": "7511 AB",
        "city": "Enschede",
    },
    "municipality_code": "GM0153",
    "wijk_code": "WK015301",
    "creditor_type": "HUUR",
    "creditor_name": "Woningcorporatie 01",
    "amount_eur": 850,
    "arrear_start_date": "2025-01-01",
    "signal_date": "2026-11-02",
}


class _LaterDebtSignal(DebtSignalIn):
    """The model as a later version may have it: one more optional field."""

    payment_plan_offered: bool | None = None


def digest(model: type[DebtSignalIn], **changes: Any) -> bytes:
    return content_digest(EventType.DEBT_SIGNAL, model.model_validate({**EVENT, **changes}))


def test_an_event_received_before_a_field_was_added_repeats_with_the_same_digest() -> None:
    assert digest(_LaterDebtSignal) == digest(DebtSignalIn)


def test_other_content_under_the_same_id_has_another_digest() -> None:
    assert digest(DebtSignalIn, amount_eur=851) != digest(DebtSignalIn)
    assert digest(_LaterDebtSignal, payment_plan_offered=True) != digest(DebtSignalIn)
    assert digest(DebtSignalIn, missed_payments=3) != digest(DebtSignalIn)


def test_a_field_sent_as_null_is_the_field_left_out() -> None:
    assert digest(DebtSignalIn, missed_payments=None) == digest(DebtSignalIn)
