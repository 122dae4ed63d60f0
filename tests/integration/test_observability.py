"""An operator can follow one event from the partner's request to its delivery: the same
correlation id in the JSON log lines of ingest, matcher and notifier and on the Kafka records
between them, the latency histograms counting it, and the ingest counts adding up."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from services.cli.peers import WebhookReceiver
from services.cli.stack import TeamAccount
from services.notifier.metrics import LATENCY_BUCKETS
from services.shared.avro import AvroCodec
from services.shared.config import DEFAULT_SCHEMAS_DIR
from services.shared.correlation import ACCEPTED_AT_HEADER, CORRELATION_HEADER, HTTP_HEADER
from services.shared.events import EventType
from services.shared.kafka import read_to_end
from services.shared.topics import (
    alerts_topic,
    intake_deadletter_topic,
    intake_topic,
    source_topic,
)
from tests.integration.fixtures import (
    Hub,
    debt_signal,
    new_address,
    service_metric,
    start_stack,
    wait_for,
)
from tests.integration.test_ingest_ways import csv_file, intake_record

pytestmark = pytest.mark.integration
#: Recent: an event older than its retention would count for no alert.
DAY = (dt.date.today() - dt.timedelta(days=2)).isoformat()


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(_SECRET.encode()) as r:
        yield r


_SECRET = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def traced_hub(
    kafka_bootstrap: str,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    receiver: WebhookReceiver,
) -> Iterator[Hub]:
    """A hub of its own that logs at INFO (the session's logs warnings only), with one team
    for Enschede whose case system takes webhooks."""
    stack = start_stack(kafka_bootstrap, database_url, tmp_path_factory.mktemp("traced"))
    stack.teams = [
        TeamAccount(
            "wijkteam-trace",
            ("GM0153",),
            ("debt-help", "integrated-approach"),
            "trace-1",
            "token-wijkteam-trace",
            channels=({"kind": "webhook", "target": receiver.url, "secret": _SECRET},),
        )
    ]
    stack.team_token = "token-wijkteam-trace"
    stack.extra_env = {"HUB_LOG_LEVEL": "INFO", "HUB_INGEST_KEY_CACHE_S": "0"}
    with stack, httpx.Client(timeout=30) as client:
        yield Hub(stack, client)


def log_lines(hub: Hub, service: str, correlation_id: str) -> list[dict[str, Any]]:
    lines = []
    for line in hub.stack.log_path(service).read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # checked by the last test of this file
        if isinstance(entry, dict) and entry.get("correlation_id") == correlation_id:
            lines.append(entry)
    return lines


def records(hub: Hub, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    async def read() -> list[ConsumerRecord[bytes, bytes]]:
        return [r async for r in read_to_end(hub.stack.kafka, [topic])]

    return asyncio.run(read())


def headers_of(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


def ingest_counts(hub: Hub) -> dict[str, dict[str, float]]:
    """Per channel, ingest's offered, accepted, duplicate and rejected events (all labels)."""
    totals: dict[str, dict[str, float]] = {}
    text = httpx.get(f"{hub.stack.url('ingest')}/metrics").text
    for family in text_string_to_metric_families(text):
        kind = family.name.removeprefix("hub_ingest_events_")
        if kind not in {"offered", "accepted", "duplicate", "rejected"}:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                channel = totals.setdefault(sample.labels["channel"], {})
                channel[kind] = channel.get(kind, 0.0) + sample.value
    return totals


def test_one_correlation_id_follows_an_event_through_every_service_to_its_delivery(
    traced_hub: Hub, receiver: WebhookReceiver
) -> None:
    hub = traced_hub
    correlation_id = str(uuid.uuid4())
    crisis = debt_signal(new_address(), DAY, crisis=True, crisis_kind="EVICTION")
    to_alert = hub.stack.url("ingest") + "/v1/events/debt-signal"
    sent = time.monotonic()
    answer = hub.client.post(
        to_alert,
        json=crisis,
        headers={"Authorization": "Bearer key-huur", HTTP_HEADER: correlation_id},
    )
    assert answer.status_code == 202, answer.text
    assert answer.headers[HTTP_HEADER] == correlation_id

    # Delivered to the team's case system, and counted in both histograms.
    receiver.wait_accepted(1)

    def timed() -> bool:
        return (
            service_metric(hub, "notifier", "hub_event_to_alert_seconds_count", rule="debt-crisis")
            >= 1
            and service_metric(
                hub, "notifier", "hub_event_to_delivery_seconds_count", channel="webhook"
            )
            >= 1
            and service_metric(
                hub, "notifier", "hub_event_to_delivery_seconds_count", channel="inbox"
            )
            >= 1
        )

    wait_for(timed, "the notifier to time the alert and its deliveries")
    # No more than this test has waited, not the hour since the event happened: the clock
    # starts at acceptance. The smallest bucket that holds the wait holds the observation.
    waited = time.monotonic() - sent
    bucket = min(b for b in LATENCY_BUCKETS if b >= waited)
    assert (
        service_metric(
            hub,
            "notifier",
            "hub_event_to_alert_seconds_bucket",
            le=str(float(bucket)),
            rule="debt-crisis",
        )
        >= 1
    ), f"not observed within the {waited:.1f} s this test waited"

    # The same id in each service's JSON log lines, from acceptance to delivery.
    seen = {
        service: wait_for(
            lambda s=service: {e["event"] for e in log_lines(hub, s, correlation_id)} or None,
            f"the {service} to log the correlation id",
        )
        for service in ("ingest", "matcher", "notifier")
    }
    assert "events.admitted" in seen["ingest"]
    assert "alert.published" in seen["matcher"]

    def stored_and_delivered() -> bool:
        events = {e["event"] for e in log_lines(hub, "notifier", correlation_id)}
        return {"alert.stored", "alert.routed", "delivery.delivered"} <= events

    wait_for(stored_and_delivered, "the notifier to log the store and the deliveries")
    for service in ("ingest", "matcher", "notifier"):
        logged = json.dumps(log_lines(hub, service, correlation_id))
        assert "Canary" not in logged and crisis["address"]["postcode"] not in logged

    # And on the records between them: the source event and the alert built from it.
    settings = hub.stack.hub_settings
    source = [
        headers_of(r)
        for r in records(hub, source_topic(settings, EventType.DEBT_SIGNAL))
        if headers_of(r).get(CORRELATION_HEADER) == correlation_id
    ]
    assert len(source) == 1 and float(source[0][ACCEPTED_AT_HEADER]) > 0
    alerts = [
        headers_of(r)
        for r in records(hub, alerts_topic(settings))
        if headers_of(r).get(CORRELATION_HEADER) == correlation_id
    ]
    assert alerts and all(a[ACCEPTED_AT_HEADER] == source[0][ACCEPTED_AT_HEADER] for a in alerts)
    stored = hub.query(
        "select correlation_id, accepted_at from alerts where correlation_id = :c",
        c=correlation_id,
    )
    assert len(stored) == 1 and stored[0][1] is not None


def test_an_id_that_is_not_a_uuid_is_replaced_and_a_batch_shares_one(
    traced_hub: Hub,
) -> None:
    hub = traced_hub
    url = hub.stack.url("ingest") + "/v1/events/debt-signal"
    too_long = hub.client.post(
        url,
        json=debt_signal(new_address(), DAY),
        headers={"Authorization": "Bearer key-huur", HTTP_HEADER: "x" * 65},
    )
    assert too_long.status_code == 202
    assert len(too_long.headers[HTTP_HEADER]) == 32 and too_long.headers[HTTP_HEADER] != "x" * 65
    # A refused request is answered with its id too.
    refused = hub.client.post(url, json={}, headers={"Authorization": "Bearer no-such-key"})
    assert refused.status_code == 401 and refused.headers[HTTP_HEADER]

    batch = [debt_signal(new_address(), DAY) for _ in range(3)]
    given = uuid.uuid4()
    answer = hub.client.post(
        url + "/batch",
        json=batch,
        headers={"Authorization": "Bearer key-huur", HTTP_HEADER: str(given).upper()},
    )
    assert answer.status_code == 200 and answer.json()["accepted"] == 3
    assert answer.headers[HTTP_HEADER] == str(given)  # kept, in lower case
    topic = source_topic(hub.stack.hub_settings, EventType.DEBT_SIGNAL)
    shared = [r for r in records(hub, topic) if headers_of(r).get(CORRELATION_HEADER) == str(given)]
    assert len(shared) == 3


def test_personal_data_sent_as_correlation_id_is_replaced_and_never_logged_or_published(
    traced_hub: Hub,
) -> None:
    """A partner that puts a BSN, an e-mail address or a name with a birth date in
    X-Correlation-Id gets a new id, and the value reaches no log line and no record."""
    hub = traced_hub
    canaries = ("111222333", "p.jansen@example.nl", "jansen-1980-01-01")
    url = hub.stack.url("ingest") + "/v1/events/debt-signal"
    replaced = []
    for n, canary in enumerate(canaries):
        # The first raises an alert, so its new id goes through matcher and notifier too.
        crisis: dict[str, Any] = {"crisis": True, "crisis_kind": "EVICTION"} if n == 0 else {}
        event = debt_signal(new_address(), DAY, **crisis)
        answer = hub.client.post(
            url,
            json=event,
            headers={"Authorization": "Bearer key-huur", HTTP_HEADER: canary},
        )
        assert answer.status_code == 202, answer.text
        assert re.fullmatch("[0-9a-f]{32}", answer.headers[HTTP_HEADER]), canary
        replaced.append(answer.headers[HTTP_HEADER])

    # Each event was admitted and published under its new id ...
    for cid in replaced:
        wait_for(
            lambda c=cid: any(e["event"] == "events.admitted" for e in log_lines(hub, "ingest", c)),
            "ingest to log the event under the new id",
        )
    settings = hub.stack.hub_settings
    source = records(hub, source_topic(settings, EventType.DEBT_SIGNAL))
    on_topic = {headers_of(r).get(CORRELATION_HEADER) for r in source}
    assert set(replaced) <= on_topic
    wait_for(
        lambda: any(e["event"] == "alert.stored" for e in log_lines(hub, "notifier", replaced[0])),
        "the notifier to store the alert under the new id",
    )
    # ... and the values sent are nowhere: not in a log line of any service, not on a record.
    for service in ("ingest", "matcher", "notifier"):
        logged = hub.stack.log_path(service).read_text(errors="replace")
        for canary in canaries:
            assert canary not in logged, (service, canary)
    for topic in (source_topic(settings, EventType.DEBT_SIGNAL), alerts_topic(settings)):
        for record in records(hub, topic):
            for canary in canaries:
                assert all(canary.encode() not in v for _, v in record.headers), (topic, canary)


def test_a_repeated_upload_is_answered_with_the_upload_id_its_events_carry(
    traced_hub: Hub,
) -> None:
    hub = traced_hub
    content = csv_file([debt_signal(new_address(), DAY)])
    key = f"upload-{uuid.uuid4()}"

    def upload() -> httpx.Response:
        return hub.client.post(
            hub.stack.url("ingest") + "/v1/uploads/debt-signal",
            content=content,
            headers={
                "Authorization": "Bearer key-huur",
                "Content-Type": "text/csv",
                "Idempotency-Key": key,
                HTTP_HEADER: str(uuid.uuid4()),  # each request an id of its own
            },
        )

    first = upload()
    assert first.status_code == 202, first.text
    upload_id = first.json()["upload_id"]
    assert first.headers[HTTP_HEADER] == upload_id
    again = upload()
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["upload_id"] == upload_id
    assert again.headers[HTTP_HEADER] == upload_id
    topic = source_topic(hub.stack.hub_settings, EventType.DEBT_SIGNAL)
    assert wait_for(
        lambda: [
            r for r in records(hub, topic) if headers_of(r).get(CORRELATION_HEADER) == upload_id
        ],
        "the upload's event on the source topic",
    )


def test_offered_is_accepted_plus_duplicate_plus_rejected_and_lag_is_exported(
    traced_hub: Hub,
) -> None:
    hub = traced_hub
    event = debt_signal(new_address(), DAY)
    broken = debt_signal(new_address(), DAY, amount_eur=-1)
    before = ingest_counts(hub).get("http", {})
    for body in (event, event, broken):
        hub.post("debt-signal", body, "key-huur")
    hub.post("debt-signal", event, "no-such-key")  # no event offered: nobody known offered it
    hub.post("wvggz-report", event, "key-huur")  # 403 before the body is read: none either

    after = ingest_counts(hub)["http"]
    moved = {k: round(after.get(k, 0) - before.get(k, 0)) for k in after}
    assert moved == {"offered": 3, "accepted": 1, "duplicate": 1, "rejected": 1}
    for channel, counts in ingest_counts(hub).items():
        assert counts["offered"] == counts["accepted"] + counts["duplicate"] + counts["rejected"], (
            channel
        )
    refused = "hub_ingest_requests_refused_total"
    assert service_metric(hub, "ingest", refused, reason="forbidden-type") >= 1
    assert service_metric(hub, "ingest", refused, reason="unauthenticated") >= 1

    # Every hub group's lag and position are on ingest's /metrics, the matcher's and
    # notifier's included.
    settings = hub.stack.hub_settings
    matcher_topic = source_topic(settings, EventType.DEBT_SIGNAL)
    gauges = {"hub_kafka_consumer_lag", "hub_kafka_consumer_position"}

    def lag_series() -> set[tuple[str, str]] | None:
        text = httpx.get(f"{hub.stack.url('ingest')}/metrics").text
        series = {
            (f.name, s.labels["group"])
            for f in text_string_to_metric_families(text)
            if f.name in gauges
            for s in f.samples
            if s.labels["topic"] in {matcher_topic, alerts_topic(settings)}
        }
        return series if len(series) == 4 else None

    groups = {settings.matcher_app_id, f"{hub.stack.topic_prefix}-notifier"}
    assert wait_for(lag_series, "the consumer lag and position of matcher and notifier") == {
        (gauge, group) for gauge in gauges for group in groups
    }


def test_a_kafka_intake_record_keeps_its_own_correlation_id_and_gets_one_when_it_has_none(
    traced_hub: Hub,
) -> None:
    hub = traced_hub
    settings = hub.stack.hub_settings
    own, other, bare = (debt_signal(new_address(), DAY) for _ in range(3))
    own_id = str(uuid.uuid4())

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=hub.stack.kafka)
        await producer.start()
        try:
            topic = intake_topic(settings, EventType.DEBT_SIGNAL)
            partner = ("hub-partner", b"woningcorporatie-01")
            for event, headers in (
                (own, [partner, (CORRELATION_HEADER, own_id.upper().encode())]),
                (other, [partner, (CORRELATION_HEADER, "naïve".encode())]),
                (bare, [partner]),
            ):
                await producer.send_and_wait(topic, intake_record(event), headers=headers)
        finally:
            await producer.stop()

    asyncio.run(send())
    topic = source_topic(settings, EventType.DEBT_SIGNAL)
    codec = AvroCodec(DEFAULT_SCHEMAS_DIR)
    sent = {e["partner_event_id"] for e in (own, other, bare)}

    def published() -> dict[str, list[str]] | None:
        """Each of the three events' correlation ids on the source topic, once all are there."""
        found: dict[str, list[str]] = {}
        for record in records(hub, topic):
            pid = codec.decode(record.value or b"")[1]["partner_event_id"]
            if pid in sent:
                found.setdefault(pid, []).append(headers_of(record).get(CORRELATION_HEADER, ""))
        return found if set(found) == sent else None

    ids = wait_for(published, "the three intake records on the source topic")
    assert ids[own["partner_event_id"]] == [own_id]  # its own, in lower case
    for event in (other, bare):
        (new,) = ids[event["partner_event_id"]]
        assert re.fullmatch("[0-9a-f]{32}", new), new
    assert ids[other["partner_event_id"]] != ids[bare["partner_event_id"]]


def test_a_dead_letter_carries_the_correlation_id_its_log_line_names(traced_hub: Hub) -> None:
    hub = traced_hub
    settings = hub.stack.hub_settings
    broken = debt_signal(new_address(), DAY)
    broken["address"]["postcode"] = "0000 XX"
    value = intake_record(broken)

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=hub.stack.kafka)
        await producer.start()
        try:
            await producer.send_and_wait(
                intake_topic(settings, EventType.DEBT_SIGNAL),
                value,
                headers=[
                    ("hub-partner", b"woningcorporatie-01"),
                    (CORRELATION_HEADER, b"jansen-1980-01-01"),
                ],
            )
        finally:
            await producer.stop()

    asyncio.run(send())
    (letter,) = wait_for(
        lambda: [r for r in records(hub, intake_deadletter_topic(settings)) if r.value == value],
        "the record's dead letter",
    )
    correlation_id = headers_of(letter)[CORRELATION_HEADER]
    assert re.fullmatch("[0-9a-f]{32}", correlation_id), correlation_id
    assert [k for k, _ in letter.headers].count(CORRELATION_HEADER) == 1  # the invalid one went
    logged = log_lines(hub, "ingest", correlation_id)
    assert [(e["event"], e["reason"]) for e in logged] == [("intake.deadlettered", "invalid")]


def _exposed(hub: Hub, service: str, sample: str) -> bool:
    """Whether /metrics has a line for the sample (name with labels), whatever its value."""
    text = httpx.get(f"{hub.stack.url(service)}/metrics").text
    return any(line.startswith(f"{sample} ") for line in text.splitlines())


def test_a_restarted_notifier_starts_the_series_of_its_teams_and_rules_at_0(
    traced_hub: Hub, receiver: WebhookReceiver
) -> None:
    """Prometheus counts an increase only of a series it saw before: a team's first give-up
    and a rule's first latency must move a series that exists already."""
    hub = traced_hub
    crisis = debt_signal(new_address(), DAY, crisis=True, crisis_kind="EVICTION")
    assert hub.post("debt-signal", crisis, "key-huur").status_code == 202
    wait_for(
        lambda: hub.query("SELECT 1 FROM alerts WHERE rule_id = 'debt-crisis'"),
        "the crisis alert to be stored",
    )
    hub.stack.stop("notifier")
    hub.stack.start("notifier")

    gave_up = 'hub_notifier_deliveries_gave_up_total{channel="webhook",team="wijkteam-trace"}'
    latency = 'hub_event_to_alert_seconds_count{rule="debt-crisis"}'
    wait_for(
        lambda: _exposed(hub, "notifier", gave_up) and _exposed(hub, "notifier", latency),
        "the notifier's sweep to start the series",
    )
    assert (
        service_metric(
            hub,
            "notifier",
            "hub_notifier_deliveries_gave_up_total",
            channel="webhook",
            team="wijkteam-trace",
        )
        == 0
    )


def test_every_line_each_service_logged_is_a_json_object(traced_hub: Hub) -> None:
    """Runs last in this file (file order): the lines of all the tests above, the notifier's
    restart included. The libraries' own lines (Faust, aiokafka, uvicorn) are JSON too."""
    for service in ("ingest", "matcher", "notifier"):
        lines = traced_hub.stack.log_path(service).read_text(errors="replace").splitlines()
        assert lines, service
        loggers = set()
        for number, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{service}.log line {number} is no JSON: {line[:200]}")
            assert isinstance(entry, dict), (service, number, line[:200])
            assert {"event", "level", "timestamp"} <= entry.keys(), (service, number, line[:200])
            loggers.add(entry.get("logger"))
        if service == "matcher":
            assert "faust.worker" in loggers, "Faust's lines go through the hub's logging"
