"""Keeps the `hub_kafka_consumer_lag` and `hub_kafka_consumer_position` gauges current for
every consumer group of the hub."""

from __future__ import annotations

import asyncio

from services.ingest import metrics
from services.ingest.settings import IngestSettings
from services.shared.lag import consumer_lag, hub_consumer_groups
from services.shared.logging import get_logger

log = get_logger("hub.ingest.lag")


async def refresh_lag(settings: IngestSettings) -> int:
    """Reads the lag once and sets the gauges; partitions no longer read are removed from them.
    Returns how many partitions were set."""
    lags = await consumer_lag(settings.kafka_bootstrap, hub_consumer_groups(settings))
    seen = {(lag.group, lag.topic, str(lag.partition)): lag for lag in lags}
    # Sample the labels of the gauges' series now, before any is replaced.
    known = {
        (s.labels["group"], s.labels["topic"], s.labels["partition"])
        for family in metrics.CONSUMER_LAG.collect()
        for s in family.samples
    }
    for labels, lag in seen.items():
        metrics.CONSUMER_LAG.labels(*labels).set(lag.lag)
        metrics.CONSUMER_POSITION.labels(*labels).set(lag.done)
    for gone in known - seen.keys():
        metrics.CONSUMER_LAG.remove(*gone)
        metrics.CONSUMER_POSITION.remove(*gone)
    return len(seen)


async def watch_lag(settings: IngestSettings) -> None:
    """Refreshes the gauge every `lag_interval_s` until cancelled. A round that cannot read
    Kafka is logged and counted; the gauge keeps its last values until the next round."""
    while True:
        try:
            await refresh_lag(settings)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Kafka away or slow: try again next round, never crash ingest
            metrics.LAG_READ_FAILURES.inc()
            log.warning("lag.read_failed", error=type(exc).__name__, detail=str(exc)[:200])
        await asyncio.sleep(settings.lag_interval_s)
