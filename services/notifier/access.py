"""What of an alert a team may see (purpose binding, DESIGN.md §3)."""

from __future__ import annotations

from typing import Any

from services.notifier.deadlines import today
from services.notifier.directory import TeamView
from services.shared.db.models import Alert
from services.shared.events import DOMAIN_NL
from services.shared.purposes import disclosed_domains


def present(alert: Alert, team: TeamView) -> dict[str, Any]:
    """The alert as `team` may see it: undisclosed domains mentioned or hidden, as the rule says.

    The matcher's explanation names every domain, so a team that may not see all of them
    gets an explanation written from the contributions it may see.
    """
    disclosed = disclosed_domains(team.purposes)
    shown = [c for c in alert.contributions if c.domain in disclosed]
    hidden = sorted(set(alert.domains) - disclosed)
    mention = alert.undisclosed_domains == "mention"
    explanation = alert.explanation if not hidden else _partial_explanation(shown, hidden, mention)
    return {
        "alert_id": alert.alert_id,
        "household_id": alert.household_id,
        "municipality_code": alert.municipality_code,
        "wijk_code": alert.wijk_code,
        "rule_id": alert.rule_id,
        "rule_version": alert.rule_version,
        "rule_title": alert.rule_title,
        "episode": alert.episode,
        "version": alert.version,
        "status": alert.status,
        "priority": alert.priority,
        "purpose": alert.purpose,
        "legal_basis": alert.legal_basis,
        "raised_on": alert.raised_on,
        "deadline": alert.deadline,
        "deadline_rule": alert.deadline_rule,
        "domains": [d for d in alert.domains if d in disclosed],
        "condition": alert.condition,
        "explanation": explanation,
        "contributions": [
            {
                "event_id": c.event_id,
                "event_type": c.event_type,
                "domain": c.domain,
                "partner_type": c.partner_type,
                "event_date": c.event_date,
                "creditor_type": c.creditor_type,
                "amount_band": c.amount_band,
            }
            for c in shown
        ],
        "overdue": alert.status != "closed" and alert.deadline < today(),
        "claimed_by": alert.claimed_by,
        "outcome": alert.outcome,
        "closed_at": alert.closed_at,
        "other_domains_involved": len(hidden) if mention else 0,
        "personal_details_removed": alert.details_removed_at is not None,
    }


def _partial_explanation(shown: list[Any], hidden: list[str], mention: bool) -> str:
    if shown:
        domains = sorted({c.domain for c in shown})
        dates = ", ".join(f"{c.event_date:%d-%m-%Y}" for c in shown)
        text = (
            f"Voor uw team zichtbaar: {len(shown)} signaal/signalen uit "
            f"{', '.join(DOMAIN_NL[d] for d in domains)}, gemeld op {dates}."
        )
    else:
        text = "Voor uw team zijn geen signalen van deze melding zichtbaar."
    if mention:
        text += (
            " Er is ook een ander domein betrokken; de details daarvan zijn alleen zichtbaar "
            "voor teams met dat doel."
        )
    return text
