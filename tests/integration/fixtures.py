"""Fixtures for tests that run the hub: a stack of the three services, partners, helpers."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text

from services.cli.stack import HubStack, PartnerAccount
from services.shared.events import EventType
from services.shared.topics import source_topic

T = TypeVar("T")
WAIT_S = 60.0

PARTNERS = [
    PartnerAccount("woningcorporatie-01", "HUUR", "key-huur", ("debt-signal",)),
    PartnerAccount("energie-01", "ENERGIE", "key-energie", ("debt-signal",)),
    PartnerAccount("zorgverzekeraar-01", "ZORG", "key-zorg", ("debt-signal",), may_send_bsn=True),
    PartnerAccount("ggd-twente", "GGD_MELDFUNCTIE", "key-ggd", ("wvggz-report",)),
    PartnerAccount("streettriage", "STREETTRIAGE", "key-triage", ("streettriage-handover",)),
    PartnerAccount("wmo-gm0153", "WMO_LOKET", "key-wmo", ("care-indication",)),
]


@dataclass
class Hub:
    stack: HubStack
    client: httpx.Client

    def post(self, event_type: str, body: dict[str, Any], key: str) -> httpx.Response:
        return self.client.post(
            f"{self.stack.url('ingest')}/v1/events/{event_type}",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        )

    def team_get(self, path: str) -> httpx.Response:
        return self.client.get(
            f"{self.stack.url('notifier')}{path}",
            headers={"Authorization": f"Bearer {self.stack.team_token}"},
        )

    def query(self, sql: str, **params: Any) -> list[Any]:
        return asyncio.run(query(self.stack.database_url, sql, params))

    def end_offsets(self) -> dict[str, int]:
        return asyncio.run(_end_offsets(self.stack))


async def query(database_url: str, sql: str, params: dict[str, Any]) -> list[Any]:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())
    finally:
        await engine.dispose()


async def _end_offsets(stack: HubStack) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka)
    await consumer.start()
    try:
        await consumer.topics()  # fetches metadata for every topic
        result = {}
        for event_type in EventType:
            topic = source_topic(stack.hub_settings, event_type)
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []
            ]
            ends = await consumer.end_offsets(partitions)
            result[topic] = sum(ends.values())
        return result
    finally:
        await consumer.stop()


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = WAIT_S) -> T:
    """Polls `probe` until it returns something truthy; the condition is the synchronisation."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


_house_numbers = itertools.count(1)


def new_address() -> dict[str, Any]:
    """A fresh synthetic address, so each test has households of its own."""
    number = next(_house_numbers)
    return {
        "street": "Teststraat",
        "house_number": number,
        "postcode": f"75{(number // 100) % 90 + 10:02d} AB",
        "city": "Enschede",
    }


def base_event(address: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "partner_event_id": str(uuid.uuid4()),
        "resident": {"name": "Canary Testpersoon", "birth_date": "1970-01-01"},
        "address": address,
        "municipality_code": "GM0153",
        "wijk_code": "WK015301",
        **extra,
    }


def debt_signal(address: dict[str, Any], signal_date: str, **extra: Any) -> dict[str, Any]:
    return base_event(
        address,
        creditor_type=extra.pop("creditor_type", "HUUR"),
        creditor_name=extra.pop("creditor_name", "Woningcorporatie 01"),
        amount_eur=extra.pop("amount_eur", 850),
        arrear_start_date=extra.pop("arrear_start_date", "2025-01-01"),
        signal_date=signal_date,
        **extra,
    )


def start_stack(kafka: str, database_url: str, workdir: Path) -> HubStack:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return HubStack(
        kafka=kafka,
        database_url=database_url,
        partners=PARTNERS,
        pseudonym_secret=f"integration-{uuid.uuid4().hex}",  # fresh households each session
        topic_prefix=prefix,
        workdir=workdir / prefix,
    )


@pytest.fixture(scope="session")
def hub(
    kafka_bootstrap: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hub]:
    with (
        start_stack(kafka_bootstrap, database_url, tmp_path_factory.mktemp("hub")) as stack,
        httpx.Client(timeout=30) as client,
    ):
        yield Hub(stack, client)
