"""Consumer lag as `hub status` and the lag gauge read it."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError

from services.shared.lag import PartitionLag, consumer_lag


@pytest.mark.parametrize(
    ("committed", "start", "end", "done", "lag"),
    [
        (50, 20, 100, 50, 50),  # committed inside the log
        (None, 20, 100, 20, 80),  # never committed: reads from the oldest record kept
        (5, 20, 100, 20, 80),  # retention deleted records the group never read: not work left
        (100, 20, 100, 100, 0),  # caught up
    ],
)
def test_lag_is_what_the_group_has_left_to_read(
    committed: int | None, start: int, end: int, done: int, lag: int
) -> None:
    partition = PartitionLag("hub-matcher", "hub.debt-signal.v1", 0, committed, end, start)
    assert (partition.done, partition.lag) == (done, lag)


async def test_an_unreachable_kafka_is_a_kafka_error() -> None:
    # The error `hub status` names and ingest's lag watch logs and retries: not a hang.
    with pytest.raises(KafkaConnectionError):
        await consumer_lag("127.0.0.1:1", {"hub-matcher": ["hub.debt-signal.v1"]})
