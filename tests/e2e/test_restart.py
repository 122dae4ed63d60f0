"""Killing the matcher mid-stream loses no alert and duplicates none in PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from services.cli.demo import expected_alerts
from services.cli.stack import HubStack, accounts
from services.cli.synthetic import Generator, SyntheticEvent
from services.shared.config import PseudonymSettings
from services.shared.identity import Pseudonymiser
from tests.integration.fixtures import wait_for

pytestmark = pytest.mark.e2e

SCALE = 0.04  # about 900 events: enough households to cross a kill in the middle


async def _send(base: str, events: list[SyntheticEvent], keys: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for event in events:
            response = await client.post(
                f"/v1/events/{event.event_type.value}",
                json=event.body,
                headers={"Authorization": f"Bearer {keys[event.partner.partner_id]}"},
            )
            assert response.status_code == 202, response.text


def test_killing_the_matcher_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    generator = Generator(seed=7, scale=SCALE)
    events = generator.events()
    keys = {p.partner_id: f"key-{p.partner_id}" for p in generator.partners}
    secret = f"restart-{tmp_path.name}-secret-for-the-test"
    stack = HubStack(
        kafka=kafka_bootstrap,
        database_url=database_url,
        partners=accounts(generator.partners, keys),
        pseudonym_secret=secret,
        topic_prefix=f"restart{abs(hash(tmp_path.name)) % 10**8}",
        workdir=tmp_path,
        own_database=True,
    )
    expected = expected_alerts(events, Pseudonymiser(PseudonymSettings(pseudonym_secret=secret)))
    want = {(a, c["event_id"]) for a, alert in expected.items() for c in alert["contributions"]}
    assert len(expected) > 20

    from tests.integration.fixtures import query

    def stored() -> set[tuple[str, str]]:
        rows = asyncio.run(
            query(
                stack.database_url,
                "select alert_id, event_id from alert_contributions where alert_id = any(:ids)",
                {"ids": list(expected)},
            )
        )
        return {(r[0], r[1]) for r in rows}

    with stack:
        half = len(events) // 2
        asyncio.run(_send(stack.url("ingest"), events[:half], keys))
        # Kill while the matcher is still working through the first half.
        stack.kill("matcher")
        # Restart once the broker has dropped the killed member, and send the rest after:
        # a restart into a backlog sometimes left faust-streaming 0.15 with a partition it
        # never fetched (docs/rules.md, known limitation).
        wait_for(lambda: _group_is_empty(stack), "the group to drop the killed matcher")
        stack.start("matcher")
        asyncio.run(_send(stack.url("ingest"), events[half:], keys))
        wait_for(lambda: stored() == want or None, "every expected contribution", timeout=180)

    rows = asyncio.run(
        query(
            stack.database_url,
            "select alert_id, rule_id from alerts where alert_id = any(:ids)",
            {"ids": list(expected)},
        )
    )
    assert len(rows) == len(expected)
    assert {r[0]: r[1] for r in rows} == {a: x["rule_id"] for a, x in expected.items()}
    # Nothing beyond the expected alerts for these households.
    households = list({x["household_id"] for x in expected.values()})
    extra = asyncio.run(
        query(
            stack.database_url,
            "select count(*) from alerts where household_id = any(:h) and not alert_id = any(:ids)",
            {"h": households, "ids": list(expected)},
        )
    )
    assert extra == [(0,)]


def _group_is_empty(stack: HubStack) -> bool:
    """True once the broker has no member left in the matcher's consumer group."""

    async def describe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka)
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups([stack.hub_settings.matcher_app_id])
            # Each group: (error code, group id, state, protocol type, protocol, members).
            (group,) = response.groups
            return not group[5]
        finally:
            await admin.close()

    return asyncio.run(describe())
