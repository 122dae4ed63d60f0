"""The fixed list of outcomes a team closes an alert with (DESIGN.md §2).

The list follows the categories Dutch municipalities report on early debt signalling; only
`niet-opgepakt` may be fed back to a creditor, never the reason. Retention of closed alerts
is set per outcome (`HUB_RETENTION_CLOSED_ALERT_DAYS`).
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator

OUTCOMES: Final[dict[str, str]] = {
    "niet-opgepakt": "Niet opgepakt",
    "geen-contact": "Geen contact met de inwoner gekregen",
    "hulp-geweigerd": "Inwoner wil geen hulp",
    "geen-hulp-nodig": "Geen hulp nodig",
    "al-lopend-traject": "Inwoner heeft al een ander lopend traject",
    "verwijzing-financieel": "Verwijzing naar schuldhulpverlening of budgetbeheer",
    "verwijzing-niet-financieel": "Verwijzing niet-financieel",
    "hulp-gestart": "Hulp gestart door het wijkteam",
}

#: The only outcome a creditor may hear about (Wgs art. 3: never the reason).
FEEDBACK_TO_CREDITOR: Final = frozenset({"niet-opgepakt"})


def _known(outcome: str) -> str:
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {outcome!r}; one of: {', '.join(OUTCOMES)}")
    return outcome


#: An outcome from the fixed list, for pydantic models (the team API, rule examples).
KnownOutcome = Annotated[str, AfterValidator(_known)]
