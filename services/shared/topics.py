"""Every Kafka topic of the hub, by name and version, in one place; `hub topics create` makes them.

Names are `<prefix>.<name>.v<N>`. Source topics are keyed by household pseudonym and must
share one partition count, so the matcher's per-household table needs no repartitioning.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.shared.config import HubSettings
from services.shared.events import EventType


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]
    doc: str


SOURCE_VERSION: Final = 1
ALERTS: Final = "alerts.v1"
DEADLETTER: Final = "deadletter.v1"
PRIVACY_COMMANDS: Final = "privacy-commands.v1"
ALERT_OUTCOMES: Final = "alert-outcomes.v1"
#: Intake topics (`<prefix>.intake.<type>.v1`) and their dead letters carry identity in clear
#: from trusted partner producers; only ingest reads them (docs/topics.md).
INTAKE: Final = "intake"
INTAKE_VERSION: Final = 1
INTAKE_DEADLETTER: Final = "intake-deadletter.v1"
#: Headers a dead letter gets on top of the record's own; a replay strips them again.
DEADLETTER_HEADERS: Final = frozenset(
    {"hub-reason", "hub-detail", "hub-source-topic", "hub-source-partition", "hub-source-offset"}
)


def deadletter_headers(
    reason: str, detail: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """Why a record was dead-lettered and where it came from (`hub deadletter list`)."""
    return [
        ("hub-reason", reason.encode()),
        ("hub-detail", detail.encode()),
        ("hub-source-topic", topic.encode()),
        ("hub-source-partition", str(partition).encode()),
        ("hub-source-offset", str(offset).encode()),
    ]


def source_topic(settings: HubSettings, event_type: EventType) -> str:
    return f"{settings.topic_prefix}.{event_type.value}.v{SOURCE_VERSION}"


def intake_topic(settings: HubSettings, event_type: EventType) -> str:
    return f"{settings.topic_prefix}.{INTAKE}.{event_type.value}.v{INTAKE_VERSION}"


def intake_deadletter_topic(settings: HubSettings) -> str:
    return f"{settings.topic_prefix}.{INTAKE_DEADLETTER}"


def holds_identity(settings: HubSettings, topic: str) -> bool:
    """Intake topics and their dead letters: the only topics with names and addresses."""
    return topic.startswith(f"{settings.topic_prefix}.{INTAKE}")


def alerts_topic(settings: HubSettings) -> str:
    return f"{settings.topic_prefix}.{ALERTS}"


def deadletter_topic(settings: HubSettings) -> str:
    return f"{settings.topic_prefix}.{DEADLETTER}"


def privacy_commands_topic(settings: HubSettings) -> str:
    return f"{settings.topic_prefix}.{PRIVACY_COMMANDS}"


def alert_outcomes_topic(settings: HubSettings) -> str:
    return f"{settings.topic_prefix}.{ALERT_OUTCOMES}"


HOUSEHOLDS_TABLE: Final = "households"


def changelog_topic(settings: HubSettings, table: str = HOUSEHOLDS_TABLE) -> str:
    """Faust's name for a table's changelog; created here so the broker never auto-creates."""
    return f"{settings.matcher_app_id}-{table}-changelog"


def _days_ms(days: int) -> int:
    return days * 24 * 3600 * 1000


def topic_specs(settings: HubSettings) -> list[TopicSpec]:
    specs = [
        TopicSpec(
            source_topic(settings, t),
            settings.topic_partitions,
            # By append time, so a late event stays its lateness longer than the policy says.
            {
                "retention.ms": str(_days_ms(settings.retention_event_days[t.value])),
                "cleanup.policy": "delete",
            },
            f"{t.value} events (Avro), key = household pseudonym",
        )
        for t in EventType
    ]
    specs.append(
        TopicSpec(
            alerts_topic(settings),
            settings.topic_partitions,
            {
                "retention.ms": str(_days_ms(settings.retention_open_alert_days)),
                "cleanup.policy": "delete",
            },
            "household alerts (Avro), key = household pseudonym",
        )
    )
    specs.append(
        TopicSpec(
            privacy_commands_topic(settings),
            settings.topic_partitions,
            # Co-partitioned with the sources; short-lived, since erase commands name a household.
            {"retention.ms": str(_days_ms(7)), "cleanup.policy": "delete"},
            "erase, purge and re-key instructions to the matcher (Avro), key = household pseudonym",
        )
    )
    specs.append(
        TopicSpec(
            alert_outcomes_topic(settings),
            settings.topic_partitions,
            # Co-partitioned with the sources: the matcher reads it with the household's events.
            {
                "retention.ms": str(_days_ms(settings.retention_open_alert_days)),
                "cleanup.policy": "delete",
            },
            "outcomes teams closed alerts with (Avro), key = household pseudonym",
        )
    )
    specs.append(
        TopicSpec(
            changelog_topic(settings),
            settings.topic_partitions,
            # Compacted only: faust-streaming mishandles `compact,delete` changelogs. Compacted
            # within a week, so an erased household's old state does not linger behind its
            # tombstone.
            {"cleanup.policy": "compact", "max.compaction.lag.ms": str(_days_ms(7))},
            "matcher state per household (Faust table changelog), key = household pseudonym",
        )
    )
    specs.extend(
        TopicSpec(
            intake_topic(settings, t),
            settings.topic_partitions,
            # Identity in clear: kept only as long as a partner may need to re-send after a fault.
            {
                "retention.ms": str(_days_ms(settings.retention_intake_days)),
                "cleanup.policy": "delete",
            },
            f"{t.value} events from partner producers (Avro, schemas/intake/), identity in clear",
        )
        for t in EventType
    )
    specs.append(
        TopicSpec(
            intake_deadletter_topic(settings),
            1,
            {
                "retention.ms": str(_days_ms(settings.retention_intake_days)),
                "cleanup.policy": "delete",
            },
            "intake records ingest refused, unchanged (identity in clear); reason in headers",
        )
    )
    specs.append(
        TopicSpec(
            deadletter_topic(settings),
            1,
            {"retention.ms": str(_days_ms(30)), "cleanup.policy": "delete"},
            "records that could not be decoded or validated; reason in headers",
        )
    )
    return specs


async def create_topics(settings: HubSettings) -> list[str]:
    """Creates the hub's topics that do not exist yet; returns the names it created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in topic_specs(settings) if s.name not in existing]
        if missing:
            with suppress(TopicAlreadyExistsError):
                # Another process may create them between list and create.
                await admin.create_topics(
                    [
                        NewTopic(
                            s.name,
                            s.partitions,
                            settings.topic_replication,
                            topic_configs=s.config,
                        )
                        for s in missing
                    ]
                )
        return [s.name for s in missing]
    finally:
        await admin.close()
