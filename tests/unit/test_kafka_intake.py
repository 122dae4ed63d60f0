"""Which failures the Kafka intake waits out, and which it does not retry."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
)
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from services.ingest.kafka_intake import _partner_of, _transient


class _CannotConnectNow(Exception):
    """Stands for asyncpg's error while PostgreSQL starts or shuts down."""


@pytest.mark.parametrize(
    "exc",
    [
        DBAPIError("select 1", {}, _CannotConnectNow("the database system is starting up")),
        OperationalError("select 1", {}, Exception("connection lost")),
        KafkaConnectionError(),
        NodeNotReadyError(),
        KafkaTimeoutError(),
        ConnectionResetError(),
    ],
    ids=type,
)
def test_kafka_or_postgresql_away_is_waited_out(exc: Exception) -> None:
    assert _transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        IntegrityError("insert", {}, Exception("duplicate key")),
        DataError("insert", {}, Exception("invalid byte sequence")),
        MessageSizeTooLargeError(),
        ValueError("a bug"),
    ],
    ids=type,
)
def test_what_fails_the_same_way_again_is_not_retried(exc: Exception) -> None:
    assert not _transient(exc)


def test_a_partner_header_without_a_value_or_unreadable_names_no_partner_id() -> None:
    assert _partner_of({}) == ""
    assert _partner_of({"hub-partner": None}) == ""
    assert _partner_of({"hub-partner": b"woningcorporatie-01"}) == "woningcorporatie-01"
    assert _partner_of({"hub-partner": b"\xffx"}) == "\ufffdx"
