"""Rotating the pseudonym secret keeps every household's correlation, end to end."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest

from tests.integration.fixtures import Hub, debt_signal, new_address, start_stack
from tests.integration.test_privacy import (
    accepted,
    alert_with,
    erase_by_address,
    household_of,
)

pytestmark = pytest.mark.e2e


def test_rotating_the_secret_keeps_households_correlated_and_erasable(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    stack = start_stack(kafka_bootstrap, database_url, tmp_path)
    with stack, httpx.Client(timeout=30) as client:
        hub = Hub(stack, client)
        address = new_address()
        crisis = debt_signal(address, "2025-10-01", crisis=True, crisis_kind="EVICTION")
        first = accepted(hub.post("debt-signal", crisis, "key-huur"))
        crisis_alert = alert_with(hub, first, "debt-crisis")
        old_household = household_of(hub, crisis_alert)
        assert old_household.startswith("hh1-")

        # The documented procedure: stop ingest, rotate, start ingest with the new version.
        stack.stop("ingest")
        old_secret, new_secret = stack.pseudonym_secret, secrets.token_urlsafe(32)
        rotated = hub.cli(
            "privacy",
            "rotate",
            "--json",
            env={
                "HUB_PSEUDONYM_VERSION": "2",
                "HUB_PSEUDONYM_SECRET": new_secret,
                "HUB_PSEUDONYM_PREVIOUS_SECRETS": json.dumps({"1": old_secret}),
            },
        )
        assert rotated.returncode == 0
        assert json.loads(rotated.stdout)["households"] >= 1
        new_household = household_of(hub, crisis_alert)
        assert new_household.startswith("hh2-")
        assert hub.query(
            "select new_id from pseudonym_links where old_id = :o", o=old_household
        ) == [(new_household,)]
        stack.pseudonym_secret, stack.pseudonym_version = new_secret, 2
        stack.previous_secrets = {1: old_secret}
        stack.start("ingest")

        # A second creditor after the rotation still makes a Twente-match with the first.
        energy = debt_signal(
            address, "2025-10-20", creditor_type="ENERGIE", creditor_name="Energie 01"
        )
        second = accepted(hub.post("debt-signal", energy, "key-energie"))
        match = alert_with(hub, second, "twente-match", contributions=2)
        assert household_of(hub, match) == new_household
        rows = hub.query("select event_id from alert_contributions where alert_id = :a", a=match)
        assert {r[0] for r in rows} == {first, second}
        contact = hub.team_get(f"/v1/alerts/{match}/contact").json()
        assert len(contact["contacts"]) == 2

        # Erasure by address finds the household under both pseudonym versions.
        report = erase_by_address(hub, address, "AVG-2026-0100")
        assert report["pseudonyms"] == 2 and report["keys_destroyed"] == 1
        assert report["alerts_deleted"] == 2
        assert (
            hub.query("select 1 from alerts where alert_id = any(:ids)", ids=[crisis_alert, match])
            == []
        )
