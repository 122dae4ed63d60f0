"""Alerts reach the right team: routing by wijk, municipality and fallback, and delivery to
webhooks and mailboxes on loopback, with retries, the operator warning, replay, and a
notifier killed mid-delivery."""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.cli.peers import SmtpSink, WebhookReceiver
from tests.integration.fixtures import (
    FALLBACK_TEAM,
    OPERATOR_EMAIL,
    REGIONAL_TEAM,
    UNCOVERED,
    Hub,
    debt_signal,
    new_address,
    service_metric,
    wait_for,
)
from tests.integration.test_channels import DATA_FIELDS
from tests.integration.test_privacy import accepted, alert_with

pytestmark = pytest.mark.integration

_wijken = itertools.count(91)


@pytest.fixture
def wijk() -> str:
    """An Enschede wijk no other test's team covers."""
    return f"WK0153{next(_wijken):02d}"


def apply_teams(hub: Hub, tmp_path: Path, teams: list[dict[str, Any]], **env: str) -> None:
    """`hub teams apply` as a data team would run it, secrets from the environment."""
    path = tmp_path / "teams.json"  # JSON is YAML
    path.write_text(json.dumps({"teams": teams}))
    done = hub.cli("teams", "apply", str(path), env=env)
    assert done.returncode == 0, (hub.stack.workdir / "cli.log").read_text()[-2000:]


def webhook_team(team_id: str, wijk: str, receiver: WebhookReceiver) -> dict[str, Any]:
    return {
        "team_id": team_id,
        "name": f"Wijkteam {team_id}",
        "purposes": ["debt-help"],
        "wijken": [wijk],
        "channels": [{"kind": "webhook", "target": receiver.url, "secret": "env:HOOK_SECRET"}],
    }


def twente_match(hub: Hub, wijk: str, municipality: str = "GM0153") -> str:
    """A new household with two creditors in `wijk`: its twente-match alert id."""
    address = new_address()
    place = {"municipality_code": municipality, "wijk_code": wijk}
    accepted(hub.post("debt-signal", debt_signal(address, "2025-10-01", **place), "key-huur"))
    energy = {"creditor_type": "ENERGIE", "creditor_name": "Energie 01", **place}
    second = accepted(
        hub.post("debt-signal", debt_signal(address, "2025-10-06", **energy), "key-energie")
    )
    return alert_with(hub, second, "twente-match", contributions=2)


def deliveries(hub: Hub, alert_id: str) -> list[Any]:
    return hub.query(
        "select delivery_id, status, attempts, notice, idempotency_key from deliveries "
        "where alert_id = :a order by delivery_id",
        a=alert_id,
    )


def attempt_statuses(hub: Hub, delivery_id: int) -> list[str]:
    rows = hub.query(
        "select status from delivery_attempts where delivery_id = :d order by at, id",
        d=delivery_id,
    )
    return [r[0] for r in rows]


def routes(hub: Hub, alert_id: str) -> dict[str, str]:
    rows = hub.query("select team_id, via from alert_routes where alert_id = :a", a=alert_id)
    return dict(rows)


@pytest.fixture
def secret() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def receiver(secret: str) -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret.encode(), fail_first=3) as r:
        yield r


def test_an_alert_goes_to_its_wijk_team_before_the_municipality_teams(
    hub: Hub, tmp_path: Path, wijk: str, secret: str, receiver: WebhookReceiver
) -> None:
    apply_teams(hub, tmp_path, [webhook_team("wijk-delivery", wijk, receiver)], HOOK_SECRET=secret)
    alert_id = twente_match(hub, wijk)
    # The wijk's own debt team only: the municipality-wide debt teams do not get it.
    assert wait_for(lambda: routes(hub, alert_id), "the alert's route") == {"wijk-delivery": "wijk"}
    refused = hub.team_get(f"/v1/alerts/{alert_id}", REGIONAL_TEAM.token)
    assert refused.status_code == 403


def test_a_webhook_that_fails_three_times_then_recovers_gets_each_alert_once(
    hub: Hub, tmp_path: Path, wijk: str, secret: str, receiver: WebhookReceiver
) -> None:
    apply_teams(hub, tmp_path, [webhook_team("wijk-retry", wijk, receiver)], HOOK_SECRET=secret)
    first, second = twente_match(hub, wijk), twente_match(hub, wijk)

    receiver.wait_accepted(2)
    accepted_alerts = sorted(e["data"]["alert_id"] for e in receiver.accepted)
    assert accepted_alerts == sorted([first, second])
    assert receiver.duplicates == [] and receiver.bad_signatures == 0
    assert receiver.requests == 5  # three refusals, then one each
    event = receiver.accepted[0]
    assert event["type"] == "nl.twente-hub.alert.raised"
    assert set(event["data"]) == DATA_FIELDS
    assert event["data"]["link"] == f"{hub.stack.url('notifier')}/inbox/alerts/{first}"

    def delivered() -> list[Any] | None:
        rows = deliveries(hub, first) + deliveries(hub, second)
        return rows if all(r[1] == "delivered" for r in rows) else None

    rows = wait_for(delivered, "both deliveries marked delivered")
    by_alert = {r[4].split(".")[0]: r for r in rows}
    # Every attempt is stored: the first alert took the three refusals.
    assert attempt_statuses(hub, by_alert[first][0]) == ["retry"] * 3 + ["delivered"]
    assert attempt_statuses(hub, by_alert[second][0]) == ["delivered"]
    assert {r[4] for r in rows} == {e["id"] for e in receiver.accepted}


def test_a_webhook_that_never_recovers_warns_the_operator_once_and_replay_resends(
    hub: Hub,
    tmp_path: Path,
    wijk: str,
    secret: str,
    mail_sink: SmtpSink,
) -> None:
    team = "wijk-kapot"
    with WebhookReceiver(secret.encode(), always_fail=True) as broken:
        apply_teams(hub, tmp_path, [webhook_team(team, wijk, broken)], HOOK_SECRET=secret)
        alerts = [twente_match(hub, wijk), twente_match(hub, wijk)]

        def gave_up() -> list[Any] | None:
            rows = [r for a in alerts for r in deliveries(hub, a)]
            return rows if len(rows) == 2 and all(r[1] == "failed" for r in rows) else None

        failed = wait_for(gave_up, "both deliveries given up")
        for row in failed:
            assert row[2] == 5  # HUB_DELIVERY_ATTEMPTS
            assert attempt_statuses(hub, row[0]) == ["retry"] * 4 + ["failed"]
        assert broken.requests == 10 and broken.accepted == []

        def gave_up_metric() -> float:
            return service_metric(
                hub,
                "notifier",
                "hub_notifier_deliveries_gave_up_total",
                channel="webhook",
                team=team,
            )

        # Counted just after the row is stored: the count, not the row, is waited for.
        wait_for(lambda: gave_up_metric() >= 2, "both give-ups counted")
        assert gave_up_metric() == 2
        warnings = [
            m for m in mail_sink.messages if m["To"] == OPERATOR_EMAIL and team in m.get_content()
        ]
        assert len(warnings) == 1, "one operator e-mail per team per day"
        assert hub.query("select count(*) from operator_warnings where team_id = :t", t=team) == [
            (1,)
        ]
        log = hub.stack.log_path("notifier").read_text()
        assert log.count('"delivery.gave_up"') >= 2

        # The receiver is repaired; the operator replays what it missed.
        broken.always_fail = False
        timed = "hub_event_to_delivery_seconds_count"
        timed_before = service_metric(hub, "notifier", timed, channel="webhook")
        done = hub.cli("deliveries", "replay", "--since", "2000-01-01", "--team", team, "--json")
        assert done.returncode == 0
        assert json.loads(done.stdout)["requeued"] == 2
        broken.wait_accepted(2)
        replayed = list(broken.accepted)
        # A new alert's notice goes out after the replays (one delivery at a time per
        # channel): it is timed, the replays, an operator's resend, are not.
        later = twente_match(hub, wijk)
        broken.wait_accepted(3)
        wait_for(
            lambda: service_metric(hub, "notifier", timed, channel="webhook") > timed_before,
            "the new notice's delivery timed",
        )
        assert service_metric(hub, "notifier", timed, channel="webhook") == timed_before + 1
    assert sorted(e["data"]["alert_id"] for e in replayed) == sorted(alerts)
    assert {e["id"] for e in replayed} == {r[4] for r in failed}  # the same keys
    assert broken.accepted[2]["data"]["alert_id"] == later


def test_an_alert_no_team_covers_goes_to_the_fallback_team_and_is_counted(hub: Hub) -> None:
    before = service_metric(hub, "notifier", "hub_alerts_fallback_total", municipality=UNCOVERED)
    alert_id = twente_match(hub, "WK173501", municipality=UNCOVERED)
    assert wait_for(lambda: routes(hub, alert_id), "the alert's route") == {
        FALLBACK_TEAM.team_id: "fallback"
    }

    def fallbacks() -> float:
        return service_metric(hub, "notifier", "hub_alerts_fallback_total", municipality=UNCOVERED)

    # Counted once the route's transaction committed: the count, not the row, is waited for.
    wait_for(lambda: fallbacks() >= before + 1, "the fallback counted")
    assert fallbacks() == before + 1
    assert hub.team_get(f"/v1/alerts/{alert_id}", FALLBACK_TEAM.token).status_code == 200
    assert hub.team_get(f"/v1/alerts/{alert_id}", REGIONAL_TEAM.token).status_code == 403


def test_a_mailbox_gets_a_notice_without_personal_details_and_the_lead_the_overdue_one(
    hub: Hub, tmp_path: Path, wijk: str, mail_sink: SmtpSink
) -> None:
    team = "wijk-mail"
    apply_teams(
        hub,
        tmp_path,
        [
            {
                "team_id": team,
                "name": "Wijkteam met e-mail",
                "purposes": ["debt-help"],
                "wijken": [wijk],
                "channels": [
                    {"kind": "email", "target": "wijkteam@gemeente.test"},
                    {"kind": "email", "target": "teamleider@gemeente.test", "notices": ["overdue"]},
                ],
            }
        ],
    )
    alert_id = twente_match(hub, wijk)

    def mail_to(address: str) -> list[Any] | None:
        found = [
            m
            for m in mail_sink.messages
            if m["To"] == address and alert_id in m.get("X-Hub-Idempotency-Key", "")
        ]
        return found or None

    notice = wait_for(lambda: mail_to("wijkteam@gemeente.test"), "the team's e-mail")[0]
    body = notice.get_content()
    assert f"/inbox/alerts/{alert_id}" in body
    assert "Canary" not in body and "Teststraat" not in body
    household = hub.query("select household_id from alerts where alert_id = :a", a=alert_id)[0][0]
    assert household not in body
    # The synthetic dates lie in the past: the deadline has passed, the team lead hears of it.
    overdue = wait_for(lambda: mail_to("teamleider@gemeente.test"), "the lead's overdue e-mail")
    assert len(overdue) == 1 and ".overdue." in overdue[0]["X-Hub-Idempotency-Key"]
    assert "over de termijn" in overdue[0]["Subject"].lower()


def test_killing_the_notifier_mid_delivery_delivers_every_alert_and_each_key_is_accepted_once(
    hub: Hub, tmp_path: Path, wijk: str, secret: str
) -> None:
    team = "wijk-herstart"
    with WebhookReceiver(secret.encode(), hold_all=True) as receiver:
        apply_teams(hub, tmp_path, [webhook_team(team, wijk, receiver)], HOOK_SECRET=secret)
        alerts = [twente_match(hub, wijk)]
        # The first delivery is in flight: the receiver has accepted it and holds the answer
        # (and any retry after the notifier's timeout) when the notifier is killed.
        assert receiver.first_request.wait(60), "no delivery reached the receiver"
        hub.stack.kill("notifier")
        receiver.release()
        hub.stack.start("notifier")
        # The killed notifier's lease still holds the channel: these wait behind it, one at a
        # time, until the restarted notifier takes the first delivery over.
        alerts += [twente_match(hub, wijk) for _ in range(3)]
        receiver.wait_accepted(len(alerts))

        def all_delivered() -> bool:
            rows = [r for a in alerts for r in deliveries(hub, a)]
            return len(rows) == len(alerts) and all(r[1] == "delivered" for r in rows)

        wait_for(all_delivered, "every delivery marked delivered after the restart")
    assert sorted(e["data"]["alert_id"] for e in receiver.accepted) == sorted(alerts)
    keys = receiver.accepted_keys()
    assert len(keys) == len(set(keys)) == len(alerts)
    # The held delivery was accepted before the kill, so its re-delivery is a duplicate the
    # receiver recognises by its key, not a second acceptance (a retry the killed notifier
    # sent after its timeout is one more of the same).
    assert receiver.duplicates and set(receiver.duplicates) == {receiver.accepted[0]["id"]}


def test_an_alert_without_a_route_is_routed_by_the_notifiers_sweep(hub: Hub) -> None:
    """As for alerts stored before the directory had their team."""
    alert_id = twente_match(hub, "WK015301")
    before = wait_for(lambda: routes(hub, alert_id), "the alert's route")
    hub.execute("delete from alert_routes where alert_id = :a", a=alert_id)
    assert wait_for(lambda: routes(hub, alert_id), "the sweep to route it again") == before


def test_a_disabled_teams_open_alerts_go_to_the_next_team_in_line(
    hub: Hub, tmp_path: Path, wijk: str, secret: str
) -> None:
    team = "wijk-opgeheven"
    with WebhookReceiver(secret.encode(), hold_all=True) as receiver:
        apply_teams(hub, tmp_path, [webhook_team(team, wijk, receiver)], HOOK_SECRET=secret)
        first = twente_match(hub, wijk)
        assert receiver.first_request.wait(60), "no delivery reached the receiver"
        # The held request and each retry of it time out after HUB_DELIVERY_TIMEOUT_S (2 s).
        # While it is in flight another notifier replica takes its lease over, so the channel
        # stays busy however slow this machine is, not only for as long as a timeout.
        taken_over = hub.execute(
            "update deliveries set lease_until = now() + interval '1 hour' "
            "where alert_id = :a and status = 'pending' returning delivery_id",
            a=first,
        )
        assert len(taken_over) == 1, "the first notice was no longer in flight"
        # The second alert's notice waits behind the first.
        second = twente_match(hub, wijk)
        assert wait_for(lambda: deliveries(hub, second), "the second notice queued")[0][1] == (
            "pending"
        )
        assert hub.cli("teams", "disable", team).returncode == 0
        receiver.release()
        # Its webhook will not send any more: what was queued is settled, for a replay.
        for alert_id in (first, second):
            assert hub.query(
                "select status, last_error from deliveries where alert_id = :a", a=alert_id
            ) == [("failed", "team-disabled")]

    def rerouted(alert_id: str) -> dict[str, str] | None:
        found = routes(hub, alert_id)
        return found if len(found) > 1 else None

    # The municipality's debt teams take both over; the disabled team keeps its history.
    for alert_id in (first, second):
        found = wait_for(lambda a=alert_id: rerouted(a), "the sweep to route it onwards")
        assert found[team] == "wijk" and found[REGIONAL_TEAM.team_id] == "municipality"
        assert hub.team_get(f"/v1/alerts/{alert_id}", REGIONAL_TEAM.token).status_code == 200
    assert receiver.accepted_keys() == [deliveries(hub, first)[0][4]]


def test_a_permanent_refusal_is_tried_once_and_given_up(
    hub: Hub, tmp_path: Path, wijk: str, secret: str
) -> None:
    team = "wijk-weigert"
    with WebhookReceiver(secret.encode(), always_fail=True, fail_status=404) as gone:
        apply_teams(hub, tmp_path, [webhook_team(team, wijk, gone)], HOOK_SECRET=secret)
        alert_id = twente_match(hub, wijk)

        def given_up() -> list[Any] | None:
            rows = deliveries(hub, alert_id)
            return rows if rows and rows[0][1] == "failed" else None

        (row,) = wait_for(given_up, "the delivery given up")
    assert gone.requests == 1 and row[2] == 1
    assert attempt_statuses(hub, row[0]) == ["failed"]
    assert hub.query("select last_error from deliveries where delivery_id = :d", d=row[0]) == [
        ("http-404",)
    ]
    assert (
        service_metric(
            hub, "notifier", "hub_notifier_deliveries_gave_up_total", channel="webhook", team=team
        )
        == 1
    )


def test_a_webhook_behind_oauth2_gets_its_token_from_the_teams_file(
    hub: Hub, tmp_path: Path, wijk: str, secret: str
) -> None:
    client = ("twente-hub", "client-secret-of-the-case-system")
    with WebhookReceiver(secret.encode(), oauth_client=client) as receiver:
        team = webhook_team("wijk-oauth", wijk, receiver)
        team["channels"][0]["oauth"] = {
            "token_url": receiver.token_url,
            "client_id": client[0],
            "client_secret": "env:OAUTH_SECRET",
        }
        apply_teams(hub, tmp_path, [team], HOOK_SECRET=secret, OAUTH_SECRET=client[1])
        alerts = {twente_match(hub, wijk), twente_match(hub, wijk)}
        receiver.wait_accepted(2)
    assert {e["data"]["alert_id"] for e in receiver.accepted} == alerts
    assert receiver.tokens_issued == 1 and receiver.bad_tokens == 0  # one token, reused
    stored = hub.query(
        "select sealed_secrets from team_channels c join teams t using (team_id) "
        "where t.team_id = 'wijk-oauth'"
    )
    assert client[1].encode() not in bytes(stored[0][0])
