"""`hub bench ingest`: the same number of events through each way in (one at a time, batches,
a CSV file, the Kafka intake topic), timed until each is published, with ingest's peak memory
per way. The figures are ratios within one run: this machine's speed is not the point.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Collection
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

from services.cli.infra import embedded_postgres, tansu_broker
from services.cli.stack import HubStack, PartnerAccount
from services.ingest.csvfile import write_csv
from services.ingest.kafka_intake import PARTNER_HEADER
from services.ingest.metrics import CHANNELS
from services.ingest.models import DebtSignalIn
from services.shared.avro import AvroCodec
from services.shared.config import DEFAULT_SCHEMAS_DIR
from services.shared.events import EventType
from services.shared.topics import intake_topic

SINGLE_CONCURRENCY = 24
#: Events each way sends first, untimed: a fresh ingest's first use of a way (imports, pools,
#: buffers) is no part of what an event costs.
WARM_UP = 100
#: How long one way may take to get its events accepted before the bench gives up.
WAIT_S = 1800.0
BATCH_SIZE = 1000
PARTNER = PartnerAccount(
    "bench-zorgverzekeraar", "ZORG", "bench-key-zorgverzekeraar", ("debt-signal",), True
)


@dataclass(frozen=True)
class WayResult:
    way: str
    events: int
    seconds: float
    peak_rss_growth_mib: float

    @property
    def per_second(self) -> float:
        return self.events / self.seconds


def _events(n: int, way: str) -> list[dict[str, Any]]:
    """n debt signals, each of its own household, with ids unique to this way."""
    run = uuid.uuid4().hex[:6]
    return [
        {
            "partner_event_id": f"{way}-{run}-{i}",
            "resident": {"name": f"Bench Persoon {i}", "birth_date": "1970-02-01"},
            "address": {
                "street": "Benchstraat",
                "house_number": i % 1000 + 1,
                "postcode": f"7{5 + i // 90_000}{(i // 1000) % 90 + 10:02d} BE",
                "city": "Enschede",
            },
            "municipality_code": "GM0153",
            "creditor_type": "ZORG",
            "creditor_name": "Bench Zorgverzekeraar",
            "amount_eur": 100 + i % 900,
            "arrear_start_date": "2025-01-01",
            "signal_date": "2025-11-03",
        }
        for i in range(n)
    ]


def _before(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"waited {WAIT_S:.0f} s for {what}")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _measured(
    stack: HubStack, way: str, n: int, send: Callable[[list[dict[str, Any]]], None]
) -> WayResult:
    send(_events(min(WARM_UP, n), f"{way}-warm"))  # untimed, and outside the peak
    pid = stack.pid("ingest")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) starts again from now
    before = _peak_rss_mib(pid)
    events = _events(n, way)
    started = time.monotonic()
    send(events)
    return WayResult(way, n, time.monotonic() - started, _peak_rss_mib(pid) - before)


def _accepted(client: httpx.Client, channel: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == "hub_ingest_events_accepted":
            return sum(
                s.value
                for s in family.samples
                if s.name.endswith("_total") and s.labels.get("channel") == channel
            )
    return 0.0


def run_bench(
    *,
    kafka: str | None,
    database_url: str | None,
    events: int,
    ways: Collection[str] = CHANNELS,
) -> list[WayResult]:
    """The figures of each of `ways` (ingest's channels), in the order of CHANNELS."""
    with ExitStack() as exit_stack:
        idempotent = kafka is not None
        kafka = kafka or exit_stack.enter_context(tansu_broker())
        database_url = database_url or exit_stack.enter_context(embedded_postgres())
        stack = exit_stack.enter_context(
            HubStack(
                kafka=kafka,
                database_url=database_url,
                partners=[PARTNER],
                teams=[],
                pseudonym_secret=uuid.uuid4().hex,
                topic_prefix=f"bench{int(time.time())}",
                workdir=Path(".hub") / "bench",
                idempotent_producer=idempotent,
                own_database=True,
                extra_env={"HUB_INGEST_RATE_LIMIT": "100000/second"},
            )
        )
        auth = {"Authorization": f"Bearer {PARTNER.api_key}"}
        client = exit_stack.enter_context(
            httpx.Client(base_url=stack.url("ingest"), headers=auth, timeout=600)
        )

        def single(batch: list[dict[str, Any]]) -> None:
            async def send_all() -> None:
                queue = list(batch)
                async with httpx.AsyncClient(
                    base_url=stack.url("ingest"), headers=auth, timeout=60
                ) as each:

                    async def worker() -> None:
                        while queue:
                            body = queue.pop()
                            response = await each.post("/v1/events/debt-signal", json=body)
                            response.raise_for_status()

                    await asyncio.gather(*(worker() for _ in range(SINGLE_CONCURRENCY)))

            asyncio.run(send_all())

        def batches(batch: list[dict[str, Any]]) -> None:
            for start in range(0, len(batch), BATCH_SIZE):
                response = client.post(
                    "/v1/events/debt-signal/batch", json=batch[start : start + BATCH_SIZE]
                )
                response.raise_for_status()
                assert response.json()["accepted"] == len(batch[start : start + BATCH_SIZE])

        def upload(batch: list[dict[str, Any]]) -> None:
            lines = write_csv(
                EventType.DEBT_SIGNAL, [DebtSignalIn.model_validate(e) for e in batch]
            )
            content = "".join(lines).encode()
            response = client.post(
                "/v1/uploads/debt-signal", content=content, headers={"Content-Type": "text/csv"}
            )
            response.raise_for_status()
            status_url = response.json()["status_url"]
            deadline = time.monotonic() + WAIT_S
            while (report := client.get(status_url).json())["status"] in {"queued", "processing"}:
                _before(deadline, f"the upload's {len(batch)} rows read")
                time.sleep(0.2)
            assert report["rows"]["accepted"] == len(batch), report

        def intake(batch: list[dict[str, Any]]) -> None:
            codec = AvroCodec(DEFAULT_SCHEMAS_DIR / "intake")
            before = _accepted(client, "kafka")

            async def produce() -> None:
                producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=5)
                await producer.start()
                try:
                    topic = intake_topic(stack.hub_settings, EventType.DEBT_SIGNAL)
                    header = [(PARTNER_HEADER, PARTNER.partner_id.encode())]
                    sent = [
                        await producer.send(
                            topic,
                            codec.encode(
                                "nl.twente.hub.intake.DebtSignalIntake",
                                DebtSignalIn.model_validate(e).model_dump(),
                            ),
                            headers=header,
                        )
                        for e in batch
                    ]
                    await asyncio.gather(*sent)
                finally:
                    await producer.stop()

            asyncio.run(produce())
            deadline = time.monotonic() + WAIT_S
            while _accepted(client, "kafka") - before < len(batch):
                _before(deadline, f"{len(batch)} intake records accepted (dead-lettered?)")
                time.sleep(0.2)

        senders = {"http": single, "batch": batches, "upload": upload, "kafka": intake}
        return [_measured(stack, way, events, senders[way]) for way in CHANNELS if way in ways]
