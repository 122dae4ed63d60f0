"""Purpose binding (DESIGN.md §3): what each purpose may combine and what it lets a team see.

A rule serves one purpose and may only combine the source domains that purpose allows:
the Wgs (art. 8b) lets early debt signalling use the signal and population register data,
never health data. A team holds purposes; it sees an alert when it holds the alert's
purpose, and the details of a domain only when one of its purposes discloses that domain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from services.shared.errors import ConfigurationError
from services.shared.events import Domain

#: Domains whose events are health data (Wvggz, Streettriage's mental-health nurse,
#: district nursing); the care domain also carries Wmo support, treated the same way.
HEALTH_DOMAINS: Final = frozenset({Domain.WVGGZ, Domain.STREETTRIAGE, Domain.CARE})


@dataclass(frozen=True)
class Purpose:
    id: str
    title: str
    legal_basis: str
    #: Source domains a rule serving this purpose may combine.
    combines: frozenset[Domain]
    #: Domains whose details (contributions, contact details) a team holding it may see.
    discloses: frozenset[Domain]


PURPOSES: Final[dict[str, Purpose]] = {
    p.id: p
    for p in (
        Purpose(
            "debt-help",
            "Schuldhulpverlening en vroegsignalering",
            "Wgs art. 3, 4 en 8b",
            frozenset({Domain.DEBT}),
            frozenset({Domain.DEBT}),
        ),
        Purpose(
            "care",
            "Zorg, ondersteuning en bemoeizorg",
            "Wmo 2015, Wvggz art. 5:2, Zvw",
            HEALTH_DOMAINS,
            HEALTH_DOMAINS,
        ),
        Purpose(
            "integrated-approach",
            "Integrale aanpak multiproblematiek",
            "Regionaal convenant Twente",
            frozenset(Domain),
            # Seeing a multi-domain alert does not by itself show any domain's details.
            frozenset(),
        ),
    )
}


def check_rule(rule_id: str, purpose: str, sources: Iterable[str]) -> None:
    """Refuses a rule whose sources its purpose may not combine; the message says why."""
    if purpose not in PURPOSES:
        raise ConfigurationError(
            f"rule {rule_id!r} serves unknown purpose {purpose!r}; known: {', '.join(PURPOSES)}"
        )
    allowed = PURPOSES[purpose].combines
    forbidden = sorted(set(sources) - allowed)
    if forbidden:
        health = sorted(set(forbidden) & HEALTH_DOMAINS)
        why = f" ({', '.join(health)} is health data)" if health else ""
        raise ConfigurationError(
            f"rule {rule_id!r} serves purpose {purpose!r}, which may combine only "
            f"{', '.join(sorted(allowed))}; it reads {', '.join(forbidden)}{why}. "
            "Refused: purpose binding (DESIGN.md §3, Wgs art. 8b)."
        )


def check_purposes(owner: str, purposes: Iterable[str]) -> None:
    unknown = sorted(set(purposes) - PURPOSES.keys())
    if unknown:
        raise ConfigurationError(
            f"{owner} holds unknown purpose(s) {', '.join(unknown)}; known: {', '.join(PURPOSES)}"
        )


def disclosed_domains(purposes: Iterable[str]) -> frozenset[str]:
    return frozenset(d.value for p in purposes for d in PURPOSES[p].discloses)
