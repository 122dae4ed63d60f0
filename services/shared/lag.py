"""Consumer lag of the hub's consumer groups: how far each group is behind each partition.

One reading for `hub status` and for the `hub_kafka_consumer_lag` gauge. The offsets are read
from Kafka (the group's committed offsets and the partitions' end offsets), not from the
consumers themselves, so a stopped matcher still shows the lag it leaves behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.shared.config import HubSettings
from services.shared.events import EventType
from services.shared.kafka import topic_partitions
from services.shared.topics import (
    alert_outcomes_topic,
    alerts_topic,
    intake_topic,
    privacy_commands_topic,
    source_topic,
)


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    #: The group's committed offset; None when it has committed nothing on this partition.
    committed: int | None
    #: Offset of the next record to be written.
    end: int
    #: Offset of the oldest record still kept (where a group without a commit would start).
    start: int

    @property
    def done(self) -> int:
        """The offset up to which the partition counts as processed by the group."""
        # Below the start, retention deleted what the group never read: not work left.
        return self.start if self.committed is None else max(self.committed, self.start)

    @property
    def lag(self) -> int:
        """Records written that the group has not committed as processed."""
        return max(0, self.end - self.done)


def hub_consumer_groups(settings: HubSettings) -> dict[str, list[str]]:
    """Each consumer group of the hub and the topics it consumes."""
    return {
        settings.matcher_app_id: [
            *(source_topic(settings, t) for t in EventType),
            privacy_commands_topic(settings),
            alert_outcomes_topic(settings),
        ],
        settings.notifier_group_id: [alerts_topic(settings)],
        settings.ingest_intake_group: [intake_topic(settings, t) for t in EventType],
    }


async def consumer_lag(bootstrap: str, groups: dict[str, list[str]]) -> list[PartitionLag]:
    """The lag of every group on every partition of its topics (topics that do not exist yet
    are left out), sorted by group, topic and partition."""
    wanted = sorted({topic for topics in groups.values() for topic in topics})
    partitions = await topic_partitions(bootstrap, wanted)
    if not partitions:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        # Inside: a start that fails (Kafka away) still closes what it opened.
        await consumer.start()
        await admin.start()
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        starts: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
        lags = []
        for group, topics in sorted(groups.items()):
            committed = await admin.list_consumer_group_offsets(group)
            for tp in partitions:
                if tp.topic not in topics:
                    continue
                offset = committed.get(tp)
                # -1: the coordinator knows the partition but holds no offset for it.
                at = offset.offset if offset is not None and offset.offset >= 0 else None
                lags.append(PartitionLag(group, tp.topic, tp.partition, at, ends[tp], starts[tp]))
        return lags
    finally:
        await admin.close()
        await consumer.stop()
