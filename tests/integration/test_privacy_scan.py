"""The privacy scan against real Kafka, PostgreSQL, a log file and a metrics endpoint."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.privacy.scan import (
    Detector,
    Finding,
    Kind,
    hub_topics,
    scan_all,
    scan_database,
    scan_kafka,
    scan_logs,
    scan_metrics,
)
from services.shared.avro import AvroCodec
from services.shared.config import DEFAULT_SCHEMAS_DIR, HubSettings

pytestmark = pytest.mark.integration

CODEC = AvroCodec(DEFAULT_SCHEMAS_DIR)
BSN = "111222333"  # passes the eleven-check
CANARY = f"Canary-{uuid.uuid4().hex[:8]}"
DETECTOR = Detector([CANARY])


def wvggz_record(number: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "partner_id": "ggd-twente-meldpunt",
        "partner_type": "GGD_MELDFUNCTIE",
        "partner_event_id": f"ggd-2025-{number:07d}",
        "household_id": f"hh1-{uuid.uuid4().hex}",
        "pseudonym_version": 1,
        "person_id": None,
        "received_at": dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC),
        "municipality_code": "GM0153",
        "wijk_code": "WK015301",
        "report_date": dt.date(2025, 3, 1),
        "reporter_category": "NEIGHBOUR",
    }


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def test_kafka_scan_finds_exactly_the_planted_records(
    kafka_bootstrap: str, producer: AIOKafkaProducer
) -> None:
    settings = HubSettings(topic_prefix=f"privacy{uuid.uuid4().hex[:8]}")
    topic = f"{settings.topic_prefix}.wvggz-report.v1"
    await create_topic(kafka_bootstrap, topic, partitions=2)

    async def send(value: bytes, partition: int) -> str:
        metadata = await producer.send_and_wait(
            topic,
            value,
            key=f"hh1-{uuid.uuid4().hex}".encode(),
            partition=partition,
            headers=[("source", b"privacy-test")],
        )
        return f"partition {metadata.partition} offset {metadata.offset}"

    for number in range(4):
        await send(CODEC.encode("nl.twente.hub.events.WvggzReport", wvggz_record(number)), 0)
        await send(CODEC.encode("nl.twente.hub.events.WvggzReport", wvggz_record(number)), 1)
    raw = await send(f"free text from a misbehaving partner: {CANARY}".encode(), 1)
    changelog = await send(json.dumps({"note": "gemeld", "person": {"bsn": BSN}}).encode(), 0)
    await send(CODEC.encode("nl.twente.hub.events.WvggzReport", wvggz_record(9)), 0)

    result = await scan_kafka(kafka_bootstrap, [topic], CODEC, DETECTOR)

    place = f"topic {topic}"
    assert result.scanned == {place: 11}
    assert sorted(result.findings, key=lambda f: f.location) == sorted(
        [
            Finding(place, raw, None, Kind.CANARY),
            Finding(place, changelog, "person.bsn", Kind.BSN),
        ],
        key=lambda f: f.location,
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert hub_topics(await admin.list_topics(), settings) == [topic]
    finally:
        await admin.close()


@dataclass(frozen=True)
class PlantedTable:
    name: str
    planted_id: str


@pytest.fixture
async def planted_table(database_url: str) -> AsyncIterator[PlantedTable]:
    """A throwaway table: one row with an address in a text column, one with the canary in
    its bytea column, one clean."""
    name = f"privacy_scan_{uuid.uuid4().hex[:8]}"
    planted = str(uuid.uuid4())
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    f"create table {name} (id uuid primary key, note text, "
                    "event_date date, sealed bytea)"
                )
            )
            await conn.execute(
                text(f"insert into {name} values (:id, :note, :day, :sealed)"),
                [
                    {
                        "id": str(uuid.uuid4()),
                        "note": "Twente-match, gemeld op 01-03-2025",
                        "day": dt.date(2025, 3, 1),
                        "sealed": b"",
                    },
                    {
                        "id": planted,
                        "note": "bezoek Kerkstraat 12, 7511 AB Enschede",
                        "day": dt.date(2025, 3, 1),
                        "sealed": b"",
                    },
                    {
                        "id": str(uuid.uuid4()),
                        "note": "versleuteld",
                        "day": dt.date(2025, 3, 2),
                        "sealed": CANARY.encode(),
                    },
                ],
            )
        yield PlantedTable(name, planted)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"drop table if exists {name}"))
        await engine.dispose()


async def test_database_scan_reads_text_columns_and_skips_ciphertext(
    database_url: str, planted_table: PlantedTable
) -> None:
    result = await scan_database(database_url, DETECTOR)

    name = planted_table.name
    place = f"table {name}"
    assert result.scanned[place] == 3
    assert f"{name}.sealed" in result.skipped
    assert [f for f in result.findings if f.place == place] == [
        Finding(place, f"id={planted_table.planted_id}", "note", Kind.POSTCODE_HOUSE_NUMBER)
    ]
    assert "table alembic_version" not in result.scanned


def test_log_scan_checks_json_fields_and_plain_lines(tmp_path: Path) -> None:
    log = tmp_path / "ingest.log"
    log.write_text(
        "\n".join(
            [
                json.dumps({"event": "event_accepted", "household_id": f"hh1-{uuid.uuid4().hex}"}),
                json.dumps({"event": "lookup", "who": "Jan de Vries", "born": "1970-05-01"}),
                "2025-03-01T12:00:00Z INFO event accepted partner=ggd-twente-meldpunt",
                f"2025-03-01T12:00:01Z ERROR validation failed bsn={BSN}",
            ]
        )
        + "\n"
    )

    result = scan_logs([log], DETECTOR)

    place = f"log {log}"
    assert result.scanned == {place: 4}
    assert result.findings == [
        Finding(place, "line 2", "born", Kind.BIRTH_DATE_WITH_NAME),
        Finding(place, "line 4", None, Kind.BSN),
    ]


@pytest.fixture
def metrics_url() -> Iterator[str]:
    registry = CollectorRegistry()
    events = Counter(
        "hub_test_events", "Events by municipality", ["municipality", "person"], registry=registry
    )
    events.labels("GM0153", "anonymous").inc()
    events.labels("GM0153", CANARY).inc()
    # A nine-digit sample value passing the eleven-check is a byte count, not a BSN.
    Gauge("hub_test_memory_bytes", "Resident memory", registry=registry).set(int(BSN))
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_metrics_scan_checks_label_values(metrics_url: str) -> None:
    async with httpx.AsyncClient() as client:
        exposition = (await client.get(metrics_url)).text.splitlines()
    # The counter's _total and _created samples both carry the label.
    canary_lines = [f"line {n}" for n, line in enumerate(exposition, start=1) if CANARY in line]
    assert len(canary_lines) == 2

    result = await scan_metrics([metrics_url], DETECTOR)

    place = f"metrics {metrics_url}"
    assert result.scanned == {place: len(exposition)}
    assert result.findings == [Finding(place, n, "person", Kind.CANARY) for n in canary_lines]


async def test_scan_all_reports_every_place(
    kafka_bootstrap: str,
    database_url: str,
    producer: AIOKafkaProducer,
    metrics_url: str,
    planted_table: PlantedTable,
    tmp_path: Path,
) -> None:
    prefix = f"privacy{uuid.uuid4().hex[:8]}"
    settings = HubSettings(
        kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, matcher_app_id=f"{prefix}-matcher"
    )
    topic = f"{settings.topic_prefix}.alerts.v1"
    await create_topic(kafka_bootstrap, topic, partitions=1)
    await producer.send_and_wait(topic, f"{CANARY} 7511AB|12||".encode(), partition=0)
    log = tmp_path / "matcher.log"
    log.write_text("all quiet\n")

    report = await scan_all(
        settings,
        database_url=database_url,
        log_paths=[log],
        metrics_urls=[metrics_url],
        canaries=[CANARY],
    )

    by_place = report.to_json()["by_place"]
    assert by_place[f"topic {topic}"] == {
        "scanned": 1,
        "findings": 2,
        "kinds": {"canary": 1, "postcode-house-number": 1},
    }
    assert by_place[f"log {log}"] == {"scanned": 1, "findings": 0, "kinds": {}}
    assert by_place[f"metrics {metrics_url}"]["kinds"] == {"canary": 2}
    assert by_place[f"table {planted_table.name}"] == {
        "scanned": 3,
        "findings": 1,
        "kinds": {"postcode-house-number": 1},
    }
    assert f"{planted_table.name}.sealed" in report.to_json()["skipped_encrypted_columns"]
    assert CANARY not in json.dumps(report.to_json())
