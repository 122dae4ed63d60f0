"""`hub status` on a stack of its own: the lag a stopped matcher leaves while events arrive, and
none once it has caught up; events per minute; open alerts per municipality."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli.peers import WebhookReceiver
from tests.integration.fixtures import Hub, debt_signal, new_address, start_stack, wait_for
from tests.integration.test_delivery import apply_teams, twente_match, webhook_team

pytestmark = pytest.mark.integration

DAY = "2025-11-03"
EVENTS = 6


@pytest.fixture(scope="module")
def own_hub(kafka_bootstrap: str, database_url: str, tmp_path_factory: Any) -> Iterator[Hub]:
    workdir: Path = tmp_path_factory.mktemp("status")
    with (
        start_stack(kafka_bootstrap, database_url, workdir) as stack,
        httpx.Client(timeout=30) as client,
    ):
        yield Hub(stack, client)


def status(hub: Hub) -> dict[str, Any]:
    done = hub.cli("status", "--json")
    assert done.returncode == 0, (done.returncode, done.stdout)
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def matcher_lag(found: dict[str, Any], hub: Hub, topic_part: str) -> int:
    group = hub.stack.hub_settings.matcher_app_id
    return sum(
        row["lag"] for row in found["lag"] if row["group"] == group and topic_part in row["topic"]
    )


def test_status_shows_the_lag_of_a_stopped_matcher_and_none_once_it_caught_up(
    own_hub: Hub,
) -> None:
    hub = own_hub
    settings = hub.stack.hub_settings
    before = status(hub)
    # Every group and every partition of its topics is listed, lag or not.
    groups = {row["group"] for row in before["lag"]}
    assert settings.matcher_app_id in groups and settings.notifier_group_id in groups
    debt_topic = f"{settings.topic_prefix}.debt-signal.v1"
    assert {r["partition"] for r in before["lag"] if r["topic"] == debt_topic} == set(
        range(settings.topic_partitions)
    )
    assert {t["topic"]: t["exists"] for t in before["topics"]}[debt_topic] is True

    hub.stack.stop("matcher")
    try:
        addresses = [new_address() for _ in range(EVENTS // 2)]
        for address in addresses:  # two creditors each: a twente-match alert per household
            for key, creditor, name in (
                ("key-huur", "HUUR", "Woningcorporatie 01"),
                ("key-energie", "ENERGIE", "Energie 01"),
            ):
                event = debt_signal(address, DAY, creditor_type=creditor, creditor_name=name)
                answer = hub.post("debt-signal", event, key)
                assert answer.status_code == 202, answer.text
        stalled = status(hub)
        assert matcher_lag(stalled, hub, ".debt-signal.") == EVENTS
        assert stalled["lag_per_group"][settings.matcher_app_id] >= EVENTS
        assert stalled["events_per_minute"]["debt-signal"]["1m"] >= EVENTS
    finally:
        hub.stack.start("matcher")

    def caught_up() -> dict[str, Any] | None:
        found = status(hub)
        return found if matcher_lag(found, hub, ".debt-signal.") == 0 else None

    def alerts_stored() -> dict[str, Any] | None:
        enschede: dict[str, Any] = status(hub)["alerts"]["GM0153"]
        return enschede if enschede["open"] >= len(addresses) else None

    assert (
        wait_for(caught_up, "the matcher to catch up")["lag_per_group"][settings.matcher_app_id]
        == 0
    )
    enschede = wait_for(alerts_stored, "the notifier to store the alerts")
    assert enschede["name"] == "Enschede"
    assert status(hub)["problems"] == {}


def failed_webhooks(found: dict[str, Any]) -> int:
    """Webhook notices failed in the last 24 hours; no row before the first webhook notice."""
    failed: int = found["deliveries"].get("webhook", {}).get("failed_24h", 0)
    return failed


def test_status_counts_overdue_alerts_and_failed_deliveries(own_hub: Hub, tmp_path: Path) -> None:
    hub = own_hub
    secret = secrets.token_urlsafe(32)
    # A case system that refuses for good (404): its notice fails at the first attempt.
    with WebhookReceiver(secret.encode(), always_fail=True, fail_status=404) as gone:
        team = webhook_team("wijk-status", "WK015398", gone)
        apply_teams(hub, tmp_path, [team], HOOK_SECRET=secret)
        before = failed_webhooks(status(hub))
        # Signals of October 2025: the four weeks to the first contact have long passed.
        twente_match(hub, "WK015398")

        def counted() -> dict[str, Any] | None:
            found = status(hub)
            enschede = found["alerts"]["GM0153"]
            failed = failed_webhooks(found)
            every_open_overdue = enschede["overdue"] == enschede["open"] > 0
            return found if every_open_overdue and failed > before else None

        found = wait_for(counted, "the overdue alert and the failed delivery in hub status")
    assert found["deliveries"]["webhook"]["failed_24h"] == before + 1
    assert found["problems"] == {}
    shown = hub.cli("status", env={"COLUMNS": "160"}).stdout
    enschede = found["alerts"]["GM0153"]
    assert re.search(
        rf"Enschede\s+.\s*GM0153\s+.\s*{enschede['open']}\s+.\s*{enschede['overdue']}\b", shown
    ), shown
    assert re.search(rf"webhook\s+.\s*{before + 1}\s", shown), shown


def test_status_names_what_it_cannot_reach_and_exits_1(own_hub: Hub) -> None:
    done = own_hub.cli(
        "status",
        "--json",
        env={"HUB_DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none"},
    )
    assert done.returncode == 1
    found = json.loads(done.stdout)
    assert set(found["problems"]) == {"database"}
    assert found["lag"], "Kafka is still read when the database is not"


def test_status_prints_an_overview_for_a_terminal(own_hub: Hub) -> None:
    done = own_hub.cli("status", env={"COLUMNS": "160"})
    assert done.returncode == 0
    for heading in ("Consumer lag", "Events in", "Topics", "Alerts", "Deliveries", "Enschede"):
        assert heading in done.stdout, done.stdout
