"""Ingest's lag gauges against real Kafka: the lag and position of a group per partition as
committed, series of partitions no longer read removed, a round that cannot read Kafka
counted and survived."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr

from services.ingest import metrics
from services.ingest.lagwatch import refresh_lag, watch_lag
from services.ingest.settings import IngestSettings
from services.shared.events import EventType
from services.shared.lag import hub_consumer_groups
from services.shared.topics import create_topics, source_topic

pytestmark = pytest.mark.integration

RECORDS = 7
COMMITTED = 3


def own_settings(kafka: str) -> IngestSettings:
    """Topics and consumer groups of this test's own, on the session's Kafka."""
    own = f"lag{uuid.uuid4().hex[:8]}"
    return IngestSettings(
        kafka_bootstrap=kafka,
        topic_prefix=own,
        matcher_app_id=f"{own}-matcher",
        notifier_group_id=f"{own}-notifier",
        ingest_intake_group=f"{own}-intake",
        topic_partitions=2,
        pseudonym_secret=SecretStr("s" * 32),
        master_key=SecretStr(base64.b64encode(os.urandom(32)).decode()),
    )


@pytest.fixture
def settings(kafka_bootstrap: str) -> Iterator[IngestSettings]:
    settings = own_settings(kafka_bootstrap)
    asyncio.run(create_topics(settings))
    yield settings
    # Leaves the process's gauges as they were: no series of this test's groups.
    for gauge in (metrics.CONSUMER_LAG, metrics.CONSUMER_POSITION):
        ours = {
            (s.labels["group"], s.labels["topic"], s.labels["partition"])
            for family in gauge.collect()
            for s in family.samples
            if s.labels["group"].startswith(settings.topic_prefix)
        }
        for labels in ours:
            gauge.remove(*labels)


async def produce_and_commit(settings: IngestSettings, topic: str) -> None:
    """RECORDS records on partition 0; the matcher's group commits COMMITTED of them."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for i in range(RECORDS):
            await producer.send_and_wait(topic, f"record {i}".encode(), partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.matcher_app_id,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): COMMITTED})
    finally:
        await consumer.stop()


def gauge(name: str, group: str, topic: str, partition: int) -> float | None:
    labels = {"group": group, "topic": topic, "partition": str(partition)}
    return metrics.REGISTRY.get_sample_value(name, labels)


def test_the_lag_gauge_shows_what_a_group_has_left_per_partition(
    settings: IngestSettings,
) -> None:
    topic = source_topic(settings, EventType.DEBT_SIGNAL)
    asyncio.run(produce_and_commit(settings, topic))
    set_now = asyncio.run(refresh_lag(settings))

    group = settings.matcher_app_id
    assert gauge("hub_kafka_consumer_lag", group, topic, 0) == RECORDS - COMMITTED
    assert gauge("hub_kafka_consumer_position", group, topic, 0) == COMMITTED
    # A partition with nothing written and nothing committed: no work left.
    assert gauge("hub_kafka_consumer_lag", group, topic, 1) == 0
    # Every partition of every group's topics is set, read by the group or not.
    topics = [topic for topics in hub_consumer_groups(settings).values() for topic in topics]
    assert set_now == settings.topic_partitions * len(topics)

    # The same hub read under other names (say, after a prefix changed): the old series go.
    other = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}x"})
    asyncio.run(create_topics(other))
    asyncio.run(refresh_lag(other))
    assert gauge("hub_kafka_consumer_lag", group, topic, 0) is None
    assert gauge("hub_kafka_consumer_position", group, topic, 0) is None


async def test_a_round_that_cannot_read_kafka_is_counted_and_the_watch_goes_on() -> None:
    unreachable = own_settings("127.0.0.1:1").model_copy(update={"lag_interval_s": 0.01})

    def failures() -> float:
        return metrics.REGISTRY.get_sample_value("hub_kafka_consumer_lag_read_failures_total") or 0

    before = failures()
    watch = asyncio.create_task(watch_lag(unreachable))
    try:
        async with asyncio.timeout(120):
            while failures() < before + 2:
                assert not watch.done(), watch
                await asyncio.sleep(0.05)  # polls the counter: the condition is the sync
    finally:
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch
