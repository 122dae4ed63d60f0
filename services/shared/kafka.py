"""Kafka clients configured the one way the hub uses them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import UnknownTopicOrPartitionError

from services.shared.config import HubSettings
from services.shared.errors import InfrastructureError


def make_producer(settings: HubSettings) -> AIOKafkaProducer:
    """acks=all; idempotent where the broker supports it (Apache Kafka, not Tansu)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=settings.kafka_idempotent_producer,
        linger_ms=5,
    )


async def topic_partitions(bootstrap: str, topics: Sequence[str]) -> list[TopicPartition]:
    """Every partition of the topics that exist; a topic that does not is left out."""
    # The admin client, because a consumer knows a topic's partitions only once assigned.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        described = await admin.describe_topics(list(topics)) if topics else []
    finally:
        await admin.close()
    partitions: list[TopicPartition] = []
    for topic in described:
        if topic["error_code"] == UnknownTopicOrPartitionError.errno:
            continue  # nothing written, nothing to read
        if topic["error_code"] != 0:
            raise InfrastructureError(
                f"cannot describe topic {topic['topic']}: Kafka error {topic['error_code']}"
            )
        partitions.extend(
            TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"]
        )
    return sorted(partitions)


async def read_to_end(
    bootstrap: str, topics: Sequence[str]
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of `topics` from the beginning up to where each partition ended when the
    read started; no consumer group, so it leaves no trace in any service's offsets."""
    partitions = await topic_partitions(bootstrap, topics)
    if not partitions:
        return
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break  # written after the read started
                    yield record
            # The position, not the last offset seen, says when a partition is done:
            # compaction and transaction markers leave offsets that carry no record.
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
    finally:
        await consumer.stop()
