"""Fixtures for tests that run the hub: a stack of the three services, partners, helpers."""

from __future__ import annotations

import asyncio
import itertools
import re
import subprocess
import sys
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

from services.cli.peers import SmtpSink
from services.cli.stack import HubStack, PartnerAccount, TeamAccount
from services.shared.avro import AvroCodec
from services.shared.config import DEFAULT_SCHEMAS_DIR
from services.shared.events import EventType
from services.shared.kafka import read_to_end
from services.shared.lag import consumer_lag, hub_consumer_groups
from services.shared.purposes import PURPOSES
from services.shared.region import MUNICIPALITIES
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


#: Enschede teams with different purposes, and a team of another municipality.
DEBT_TEAM = TeamAccount(
    "schuldhulp-enschede",
    ("GM0153",),
    ("debt-help", "integrated-approach"),
    "schuldhulp-1",
    "token-schuldhulp-enschede",
)
CARE_TEAM = TeamAccount(
    "zorg-enschede",
    ("GM0153",),
    ("care", "integrated-approach"),
    "zorg-1",
    "token-zorg-enschede-team",
)
DEBT_ONLY_TEAM = TeamAccount(
    "vroegsignalering-enschede", ("GM0153",), ("debt-help",), "vroeg-1", "token-vroegsignalering"
)
HENGELO_TEAM = TeamAccount(
    "wijkteam-hengelo",
    ("GM0164",),
    ("debt-help", "care", "integrated-approach"),
    "hengelo-1",
    "token-wijkteam-hengelo",
)
#: The team holding the stack's default token: every purpose in every municipality but
#: Hof van Twente, which only the fallback team covers (so fallback routing can be seen).
UNCOVERED = "GM1735"
REGIONAL_TEAM = TeamAccount(
    "regio-twente",
    tuple(m for m in MUNICIPALITIES if m != UNCOVERED),
    tuple(PURPOSES),
    "regio-medewerker",
    "test-team-token-regio",
)
FALLBACK_TEAM = TeamAccount(
    "regio-vangnet", (), tuple(PURPOSES), "vangnet-1", "token-regio-vangnet", fallback=True
)
TEAMS = [REGIONAL_TEAM, DEBT_TEAM, CARE_TEAM, DEBT_ONLY_TEAM, HENGELO_TEAM, FALLBACK_TEAM]


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

    def post_batch(
        self,
        event_type: str,
        body: Any,
        key: str,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return self.client.post(
            f"{self.stack.url('ingest')}/v1/events/{event_type}/batch", json=body, headers=headers
        )

    def upload(
        self, event_type: str, content: bytes, key: str, idempotency_key: str | None = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "text/csv"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return self.client.post(
            f"{self.stack.url('ingest')}/v1/uploads/{event_type}", content=content, headers=headers
        )

    def upload_report(self, upload_id: str, key: str, **params: Any) -> httpx.Response:
        return self.client.get(
            f"{self.stack.url('ingest')}/v1/uploads/{upload_id}",
            params=params,
            headers={"Authorization": f"Bearer {key}"},
        )

    def finished_upload(self, upload_id: str, key: str, timeout: float = WAIT_S) -> dict[str, Any]:
        """The upload's report once its processing ended."""

        def finished() -> dict[str, Any] | None:
            report: dict[str, Any] = self.upload_report(upload_id, key).json()
            return None if report["status"] in {"queued", "processing"} else report

        return wait_for(finished, f"upload {upload_id} to finish", timeout)

    def team_get(self, path: str, token: str | None = None) -> httpx.Response:
        return self.client.get(
            f"{self.stack.url('notifier')}{path}",
            headers={"Authorization": f"Bearer {token or self.stack.team_token}"},
        )

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Runs `hub ARGS` as an operator would, against this stack; its log goes to a file."""
        with (self.stack.workdir / "cli.log").open("a") as log:
            return subprocess.run(
                [sys.executable, "-m", "services.cli.main", *args],
                env={**self.stack.env(), "HUB_LOG_LEVEL": "INFO", **(env or {})},
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                timeout=timeout,
                check=False,
            )

    def query(self, sql: str, **params: Any) -> list[Any]:
        return asyncio.run(query(self.stack.database_url, sql, params))

    def execute(self, sql: str, **params: Any) -> list[Any]:
        """Runs and commits a change, as an operator at the database would; the rows of its
        `returning` clause, if any."""
        return asyncio.run(query(self.stack.database_url, sql, params, commit=True))

    def end_offsets(self) -> dict[str, int]:
        return asyncio.run(_end_offsets(self.stack))

    def matcher_lag(self) -> int:
        """Records on the matcher's topics it has not processed yet."""
        settings = self.stack.hub_settings
        group = settings.matcher_app_id
        groups = {group: hub_consumer_groups(settings)[group]}
        return sum(p.lag for p in asyncio.run(consumer_lag(self.stack.kafka, groups)))


async def query(
    database_url: str, sql: str, params: dict[str, Any], commit: bool = False
) -> list[Any]:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(sql), params)
            rows = list(result.all()) if result.returns_rows else []
            if commit:
                await conn.commit()
            return rows
    finally:
        await engine.dispose()


async def _end_offsets(stack: HubStack) -> dict[str, int]:
    settings = stack.hub_settings
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.kafka)
    await consumer.start()
    try:
        # The partition count the topics were created with: an unassigned consumer's
        # metadata does not list a topic's partitions.
        result = {}
        for event_type in EventType:
            topic = source_topic(settings, event_type)
            partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
            ends = await consumer.end_offsets(partitions)
            result[topic] = sum(ends.values())
        return result
    finally:
        await consumer.stop()


def add_partner(hub: Hub, partner_id: str, *args: str) -> str:
    """Registers a partner with `hub partners add`; returns its API key."""
    done = hub.cli("partners", "add", partner_id, "--name", partner_id.title(), *args)
    assert done.returncode == 0, (hub.stack.workdir / "cli.log").read_text()[-1500:]
    return done.stdout.strip()


def published(hub: Hub, event_type: str, partner_id: str) -> list[dict[str, Any]]:
    """Every record of `partner_id` on the event type's source topic, as decoded."""

    async def read() -> list[dict[str, Any]]:
        codec = AvroCodec(DEFAULT_SCHEMAS_DIR)
        topic = source_topic(hub.stack.hub_settings, EventType(event_type))
        found = []
        async for record in read_to_end(hub.stack.kafka, [topic]):
            _, event = codec.decode(record.value or b"")
            if event["partner_id"] == partner_id:
                assert record.key == event["household_id"].encode()
                found.append(event)
        return found

    return asyncio.run(read())


def alerts_of(hub: Hub, event_id: str) -> list[Any]:
    """(alert_id, rule_id, version, municipality_code, deadline) of alerts holding the event."""
    return hub.query(
        "select a.alert_id, a.rule_id, a.version, a.municipality_code, a.deadline "
        "from alerts a join alert_contributions c using (alert_id) where c.event_id = :e",
        e=event_id,
    )


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


def service_metric(hub: Hub, service: str, name: str, **labels: str) -> float:
    """One sample of a service's /metrics, 0 when not exposed (yet)."""
    text = httpx.get(f"{hub.stack.url(service)}/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # as exposed
    match = re.search(rf"^{name}{{{re.escape(wanted)}}} (\S+)$", text, re.M)
    return float(match[1]) if match else 0.0


#: Quick retries, so a test sees a delivery given up in about a second.
OPERATOR_EMAIL = "operator@hub.test"


def delivery_env(mail: SmtpSink) -> dict[str, str]:
    """The session hub's settings: quick delivery retries, the SMTP sink, and ingest asking
    the partner registry on every request (a disabled key is refused at once)."""
    return {
        "HUB_INGEST_KEY_CACHE_S": "0",
        # The fuzz suite sends thousands of requests; the limit itself is tested in-process.
        "HUB_INGEST_RATE_LIMIT": "10000/second",
        "HUB_DELIVERY_ATTEMPTS": "5",
        "HUB_DELIVERY_WAIT_INITIAL_S": "0.05",
        "HUB_DELIVERY_WAIT_MAX_S": "0.2",
        # Short: a killed notifier's lease (wait + 4 timeouts + 5 s) runs out in 13 s.
        "HUB_DELIVERY_TIMEOUT_S": "2",
        "HUB_SMTP_HOST": mail.host,
        "HUB_SMTP_PORT": str(mail.port),
        "HUB_SMTP_FROM": "hub@hub.test",
        "HUB_OPERATOR_EMAIL": OPERATOR_EMAIL,
    }


def start_stack(
    kafka: str, database_url: str, workdir: Path, mail: SmtpSink | None = None
) -> HubStack:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return HubStack(
        kafka=kafka,
        database_url=database_url,
        partners=PARTNERS,
        teams=TEAMS,
        pseudonym_secret=f"integration-{uuid.uuid4().hex}",  # fresh households each session
        topic_prefix=prefix,
        workdir=workdir / prefix,
        team_token=REGIONAL_TEAM.token,
        own_database=True,
        extra_env=delivery_env(mail) if mail else {},
    )


@pytest.fixture(scope="session")
def mail_sink() -> Iterator[SmtpSink]:
    """The SMTP server of the session's hub: team mailboxes and the operator's."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="session")
def hub(
    kafka_bootstrap: str,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    mail_sink: SmtpSink,
) -> Iterator[Hub]:
    workdir = tmp_path_factory.mktemp("hub")
    with (
        start_stack(kafka_bootstrap, database_url, workdir, mail_sink) as stack,
        httpx.Client(timeout=30) as client,
    ):
        yield Hub(stack, client)
