"""Purpose binding, envelope encryption and the matcher's purge and merge, without services."""

from __future__ import annotations

import base64
import datetime as dt
import os

import pytest
from pydantic import SecretStr, ValidationError

from services.ingest.models import Address
from services.matcher.engine import Engine, Household, merge, purge
from services.matcher.facts import Fact
from services.matcher.rules import Condition, Deadline, Rule
from services.matcher.ruleset import DEFAULT_RULES_FILE, load_ruleset
from services.notifier.access import present
from services.notifier.directory import TeamSpec, TeamView
from services.shared.config import VaultSettings
from services.shared.crypto import ContactDetails, Vault
from services.shared.db.models import Alert, Contribution
from services.shared.errors import ConfigurationError, DecryptionFailed
from services.shared.purposes import check_rule, disclosed_domains


def test_a_debt_purpose_rule_that_reads_health_sources_is_refused() -> None:
    with pytest.raises(ConfigurationError) as refused:
        Rule(
            id="schulden-en-ggz",
            version=1,
            title="Schulden en ggz",
            purpose="debt-help",
            legal_basis="Wgs art. 4",
            priority="NORMAL",
            deadline=Deadline(28, working_days=False),
            sources=frozenset({"debt", "wvggz"}),
            condition=Condition(window_days=90, min_events=2, min_domains=2),
        )
    message = str(refused.value)
    assert "schulden-en-ggz" in message and "debt-help" in message
    assert "wvggz is health data" in message and "Wgs art. 8b" in message


BASELINE_RULES = load_ruleset(DEFAULT_RULES_FILE).rules


def test_the_baseline_rules_pass_purpose_binding() -> None:
    for rule in BASELINE_RULES:
        check_rule(rule.id, rule.purpose, rule.sources)
    with pytest.raises(ConfigurationError, match="unknown purpose"):
        check_rule("x", "marketing", {"debt"})


def test_a_team_with_an_unknown_purpose_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown purpose"):
        TeamSpec(team_id="t", name="t", municipalities=["GM0153"], purposes=["profiling"])


def test_purposes_disclose_domains_as_the_covenant_says() -> None:
    assert disclosed_domains(["debt-help"]) == {"debt"}
    assert disclosed_domains(["care"]) == {"wvggz", "streettriage", "care"}
    assert disclosed_domains(["integrated-approach"]) == frozenset()


DETAILS = ContactDetails(
    name="Kanarie Vogelaar",
    birth_date=dt.date(1957, 3, 14),
    street="Kanarieweg",
    house_number=12,
    postcode="7511AB",
    city="Enschede",
)


def _vault() -> Vault:
    return Vault(VaultSettings(master_key=SecretStr(base64.b64encode(os.urandom(32)).decode())))


def test_contact_details_open_only_with_their_own_key_and_event() -> None:
    vault = _vault()
    data_key, wrapped = vault.new_data_key("key-1")
    sealed = Vault.seal_contact(data_key, "event-1", DETAILS)
    assert b"Kanarie" not in sealed and b"Kanarie" not in wrapped
    assert Vault.open_contact(vault.unwrap("key-1", wrapped), "event-1", sealed) == DETAILS
    with pytest.raises(DecryptionFailed):
        Vault.open_contact(data_key, "event-2", sealed)  # sealed for another event
    with pytest.raises(DecryptionFailed):
        vault.unwrap("key-2", wrapped)  # wrapped for another row
    with pytest.raises(DecryptionFailed):
        _vault().unwrap("key-1", wrapped)  # another master key


def test_the_master_key_must_be_32_bytes_and_not_the_development_one_in_production() -> None:
    with pytest.raises(ConfigurationError, match="32 random bytes"):
        VaultSettings(master_key=SecretStr("dG9vIHNob3J0"))
    with pytest.raises(ConfigurationError, match="development key"):
        VaultSettings(environment="production")


def _fact(event_id: str, day: str, creditor: str, domain: str = "debt") -> Fact:
    return Fact(
        event_id=event_id,
        event_type="debt-signal" if domain == "debt" else "wvggz-report",
        domain=domain,
        partner_id=f"p-{creditor}",
        partner_type="HUUR",
        event_date=dt.date.fromisoformat(day),
        municipality_code="GM0153",
        wijk_code=None,
        creditor_type="HUUR" if domain == "debt" else None,
        creditor=creditor if domain == "debt" else None,
        amount_eur=500 if domain == "debt" else None,
    )


def test_purged_events_stop_counting_even_when_sent_again() -> None:
    engine = Engine(BASELINE_RULES)
    state = Household()
    engine.apply("hh1-x", state, _fact("a", "2025-01-10", "huur"))
    assert purge(state, {"debt": "2025-02-01"}) == 1
    assert state.facts == {}
    again = engine.apply("hh1-x", state, _fact("a", "2025-01-10", "huur"))
    assert again.expired and again.publish == ()
    later = engine.apply("hh1-x", state, _fact("b", "2025-02-10", "energie"))
    assert later.publish == ()  # no Twente-match with the purged signal


def test_a_moved_state_meets_events_that_arrived_first_under_the_new_pseudonym() -> None:
    engine = Engine(BASELINE_RULES)
    old, new = Household(), Household()
    engine.apply("hh1-x", old, _fact("a", "2025-03-01", "huur"))
    engine.apply("hh2-x", new, _fact("b", "2025-03-05", "energie"))
    merge(new, old)
    alerts = engine.records("hh2-x", new, engine.evaluate("hh2-x", new).publish)
    assert [a["rule_id"] for a in alerts] == ["twente-match"]
    assert {c["event_id"] for c in alerts[0]["contributions"]} == {"a", "b"}


def test_when_both_pseudonyms_have_an_alert_the_joined_one_is_published() -> None:
    engine = Engine(BASELINE_RULES)
    old, new = Household(), Household()
    for event_id, day, creditor in (("a", "2025-03-01", "huur"), ("b", "2025-03-02", "energie")):
        engine.apply("hh1-x", old, _fact(event_id, day, creditor))
    for event_id, day, creditor in (("c", "2025-03-05", "water"), ("d", "2025-03-06", "duo")):
        engine.apply("hh2-x", new, _fact(event_id, day, creditor))
    old_id = old.open["twente-match"].alert_id
    outcome = engine.evaluate("hh2-x", new, also=merge(new, old))
    (alert,) = engine.records("hh2-x", new, outcome.publish)
    assert alert["alert_id"] == old_id  # the alert the team already works on
    assert {c["event_id"] for c in alert["contributions"]} == {"a", "b", "c", "d"}
    assert alert["version"] == 2  # newer than either stored version, so the notifier takes it


def test_an_addition_no_dutch_address_has_is_refused_at_the_boundary() -> None:
    with pytest.raises(ValidationError, match="house number"):
        Address.model_validate(
            {
                "street": "Kerkstraat",
                "house_number": 12,
                "house_number_addition": "a.b",
                "postcode": "7511AB",
                "city": "Enschede",
            }
        )


def _alert(undisclosed: str) -> Alert:
    alert = Alert(
        alert_id="a1",
        household_id="hh1-x",
        municipality_code="GM0153",
        wijk_code=None,
        rule_id="multi-domain",
        rule_version=1,
        episode=1,
        version=2,
        status="open",
        priority="HIGH",
        purpose="integrated-approach",
        legal_basis="Regionaal convenant Twente",
        raised_on=dt.date(2025, 3, 5),
        deadline=dt.date(2025, 3, 19),
        deadline_rule="14 dagen",
        domains=["debt", "wvggz"],
        explanation="Signalen uit 2 domeinen (schulden, Wvggz-melding) binnen 180 dagen.",
        undisclosed_domains=undisclosed,
        details_removed_at=None,
    )
    alert.contributions = [
        Contribution(
            event_id=e, event_type=t, domain=d, partner_type=p, event_date=dt.date(2025, 3, n)
        )
        for e, t, d, p, n in (
            ("e1", "debt-signal", "debt", "HUUR", 1),
            ("e2", "wvggz-report", "wvggz", "GGD_MELDFUNCTIE", 5),
        )
    ]
    return alert


@pytest.mark.parametrize(("undisclosed", "mentioned"), [("mention", 1), ("hide", 0)])
def test_a_debt_team_sees_the_debt_part_and_at_most_that_another_domain_is_involved(
    undisclosed: str, mentioned: int
) -> None:
    team = TeamView("t", "t", ("debt-help", "integrated-approach"))
    view = present(_alert(undisclosed), team)
    assert [c["event_id"] for c in view["contributions"]] == ["e1"]
    assert view["domains"] == ["debt"]
    assert view["other_domains_involved"] == mentioned
    assert "Wvggz" not in view["explanation"]
    assert ("ander domein" in view["explanation"]) == bool(mentioned)
