"""Kafka clients configured the one way the hub uses them."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer, TopicPartition
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
    await admin.start()
    try:
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
