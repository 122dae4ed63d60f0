"""Ingest's limits (body size, batch size, upload size, a partner's request rate) refuse with
the field and publish nothing. The service runs in-process here, with small limits, against
the session's Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.integration.fixtures import Hub, add_partner, debt_signal, new_address, published

pytestmark = pytest.mark.integration


def limited_settings(hub: Hub, monkeypatch: pytest.MonkeyPatch, **limits: Any) -> IngestSettings:
    for name, value in hub.stack.env().items():
        monkeypatch.setenv(name, value)
    return IngestSettings(ingest_kafka_intake=False, **limits)


async def exchange(
    settings: IngestSettings, requests: list[dict[str, Any]]
) -> list[httpx.Response]:
    """Starts ingest in-process, sends the requests in order, stops it again."""
    app = create_app(settings)
    responses = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            for request in requests:
                responses.append(await client.request(**request))
    return responses


async def streamed(data: bytes) -> AsyncIterator[bytes]:
    """A body without Content-Length, as a chunked upload arrives."""
    for start in range(0, len(data), 512):
        yield data[start : start + 512]


def post(path: str, key: str, **body: Any) -> dict[str, Any]:
    return {"method": "POST", "url": path, "headers": {"Authorization": f"Bearer {key}"}, **body}


def test_bodies_batches_and_files_past_their_limit_get_413_naming_the_body(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner_id = "limiet-energie"
    key = add_partner(hub, partner_id, "--type", "ENERGIE", "--event-type", "debt-signal")
    settings = limited_settings(
        hub,
        monkeypatch,
        ingest_max_body_bytes=4096,
        ingest_max_batch_events=2,
        ingest_max_upload_bytes=2048,
    )
    event = debt_signal(new_address(), "2025-11-03", creditor_type="ENERGIE")
    padded = {**event, "creditor_name": "x" * 5000}
    big_csv = b"partner_event_id;resident.name\n" + b"a;b\n" * 1000
    responses = asyncio.run(
        exchange(
            settings,
            [
                post("/v1/events/debt-signal", key, json=padded),
                post("/v1/events/debt-signal", key, content=streamed(json.dumps(padded).encode())),
                post("/v1/events/debt-signal/batch", key, json=[event, event, event]),
                post("/v1/uploads/debt-signal", key, content=big_csv),
                post("/v1/uploads/debt-signal", key, content=streamed(big_csv)),
                post("/v1/events/debt-signal", key, json=event),
            ],
        )
    )
    *refused, fine = responses
    assert [r.status_code for r in refused] == [413] * 5
    for response in refused:
        assert response.json()["errors"][0]["field"] == "body", response.text
    assert fine.status_code == 202
    assert [e["partner_event_id"] for e in published(hub, "debt-signal", partner_id)] == [
        event["partner_event_id"]
    ]


def test_a_partner_over_its_rate_gets_429_with_retry_after(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner_id = "limiet-huur"
    key = add_partner(hub, partner_id, "--type", "HUUR", "--event-type", "debt-signal")
    other_key = add_partner(hub, "limiet-huur-2", "--type", "HUUR", "--event-type", "debt-signal")
    settings = limited_settings(hub, monkeypatch, ingest_rate_limit="3/minute")
    events = [debt_signal(new_address(), "2025-11-03") for _ in range(5)]
    responses = asyncio.run(
        exchange(
            settings,
            [post("/v1/events/debt-signal", key, json=e) for e in events[:4]]
            + [post("/v1/events/debt-signal", other_key, json=events[4])],
        )
    )
    assert [r.status_code for r in responses] == [202, 202, 202, 429, 202]
    assert 1 <= int(responses[3].headers["Retry-After"]) <= 60
    assert sorted(e["partner_event_id"] for e in published(hub, "debt-signal", partner_id)) == (
        sorted(e["partner_event_id"] for e in events[:3])
    )
