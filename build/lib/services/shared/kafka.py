"""Kafka clients configured the one way the hub uses them."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from services.shared.config import HubSettings


def make_producer(settings: HubSettings) -> AIOKafkaProducer:
    """acks=all; idempotent where the broker supports it (Apache Kafka, not Tansu)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=settings.kafka_idempotent_producer,
        linger_ms=5,
    )
