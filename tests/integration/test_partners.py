"""The partner registry: `hub partners` registers, rotates and disables; ingest checks keys,
roles and BSN rights against it on every request."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from tests.integration.fixtures import Hub, add_partner, base_event, debt_signal, new_address
from tests.integration.test_privacy import accepted

pytestmark = pytest.mark.integration


def partners(hub: Hub) -> dict[str, dict[str, Any]]:
    done = hub.cli("partners", "list", "--json")
    assert done.returncode == 0
    return {p["partner_id"]: p for p in json.loads(done.stdout)}


def test_a_registered_partner_publishes_only_its_types_and_its_key_rotates(hub: Hub) -> None:
    key = add_partner(hub, "waterbedrijf-twente", "--type", "WATER", "--event-type", "debt-signal")
    assert len(key) >= 40
    stored = hub.query(
        "select key_sha256 from partner_api_keys where partner_id = 'waterbedrijf-twente'"
    )
    assert [bytes(r[0]) for r in stored] == [hashlib.sha256(key.encode()).digest()]
    signal = debt_signal(new_address(), "2025-11-03", creditor_type="WATER")
    accepted(hub.post("debt-signal", signal, key))

    # Its role: a water company sends no Wvggz reports and no BSN.
    report = base_event(new_address(), report_date="2025-11-03", reporter_category="NEIGHBOUR")
    assert hub.post("wvggz-report", report, key).status_code == 403
    assert hub.post_batch("wvggz-report", [report], key).status_code == 403
    forbidden_file = hub.upload("wvggz-report", b"partner_event_id;report_date\n", key)
    assert forbidden_file.status_code == 403
    assert [e["field"] for e in forbidden_file.json()["errors"]] == ["event_type"]
    assert hub.query("select count(*) from uploads where partner_id = 'waterbedrijf-twente'") == [
        (0,)
    ]
    with_bsn = debt_signal(new_address(), "2025-11-03", creditor_type="WATER")
    with_bsn["resident"]["bsn"] = "111222333"
    refused = hub.post("debt-signal", with_bsn, key)
    assert refused.status_code == 422 and "resident.bsn" in refused.text
    assert "111222333" not in refused.text

    # A new key; the old one keeps working through the overlap, then stops.
    rotated = hub.cli("partners", "rotate-key", "waterbedrijf-twente", "--overlap-hours", "1")
    new_key = rotated.stdout.strip()
    assert rotated.returncode == 0 and new_key != key
    for k in (key, new_key):
        accepted(hub.post("debt-signal", debt_signal(new_address(), "2025-11-04"), k))
    # The old key ends an hour from now by the database's clock, the new one never.
    (left,) = hub.query(
        "select extract(epoch from expires_at - now()) from partner_api_keys "
        "where partner_id = 'waterbedrijf-twente' and expires_at is not null"
    )
    assert 3500 < float(left[0]) <= 3600
    hub.execute(
        "update partner_api_keys set expires_at = now() - interval '1 second' "
        "where partner_id = 'waterbedrijf-twente' and expires_at is not null"
    )
    assert hub.post("debt-signal", debt_signal(new_address(), "2025-11-04"), key).status_code == 401
    accepted(hub.post("debt-signal", debt_signal(new_address(), "2025-11-04"), new_key))
    assert partners(hub)["waterbedrijf-twente"]["keys"] == ["expired", "valid"]

    # Without an overlap (a key that leaked) the key it replaces stops at once.
    leaked = new_key
    rotated = hub.cli("partners", "rotate-key", "waterbedrijf-twente", "--overlap-hours", "0")
    new_key = rotated.stdout.strip()
    assert rotated.returncode == 0 and new_key != leaked
    assert (
        hub.post("debt-signal", debt_signal(new_address(), "2025-11-04"), leaked).status_code == 401
    )
    accepted(hub.post("debt-signal", debt_signal(new_address(), "2025-11-04"), new_key))

    # Disabled: every key stops at once.
    assert hub.cli("partners", "disable", "waterbedrijf-twente").returncode == 0
    assert (
        hub.post("debt-signal", debt_signal(new_address(), "2025-11-05"), new_key).status_code
        == 401
    )
    assert hub.cli("partners", "enable", "waterbedrijf-twente").returncode == 0
    accepted(hub.post("debt-signal", debt_signal(new_address(), "2025-11-05"), new_key))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--type", "HUUR", "--event-type", "wvggz-report"), "cannot publish wvggz-report"),
        (("--type", "ENERGIE", "--event-type", "debt-signal", "--may-send-bsn"), "BSN"),
        (("--type", "BAKKER", "--event-type", "debt-signal"), "is not one of"),
        (("--type", "ZORG", "--event-type", "gossip"), "event_types.0"),
    ],
)
def test_a_partner_that_would_overstep_its_role_is_refused(
    hub: Hub, args: tuple[str, ...], message: str
) -> None:
    done = hub.cli("partners", "add", "te-veel-01", "--name", "Te Veel", *args)
    assert done.returncode == 2
    assert message in (hub.stack.workdir / "cli.log").read_text()[-1000:]
    assert "te-veel-01" not in partners(hub)
