"""The back-test of the demo year gives the alerts the live matcher raised in `hub demo`.

`hub demo` runs the three services against Apache Kafka and PostgreSQL and sends the
synthetic year through ingest. Its source topics are then exported with `hub export events`
and replayed with `hub backtest`; the alert ids must be the ones on the demo's alerts topic,
which only the live matcher writes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from services.backtest.events import EventsFile
from services.backtest.replay import replay_file
from services.matcher.ruleset import DEFAULT_RULES_FILE, load_ruleset
from services.shared.avro import AvroCodec
from services.shared.config import DEFAULT_SCHEMAS_DIR
from services.shared.kafka import topic_partitions

pytestmark = pytest.mark.e2e

SCALE = "0.05"


def _hub(*args: str, env: dict[str, str], log: Path) -> str:
    with log.open("a") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=600,
            check=False,
        )
    assert done.returncode == 0, f"hub {' '.join(args)} failed; see {log}"
    return done.stdout


async def _live_alerts(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    """Every alert on the topic, last version wins: what the live matcher raised."""
    codec = AvroCodec(DEFAULT_SCHEMAS_DIR)
    partitions = await topic_partitions(bootstrap, [topic])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        alerts: dict[str, dict[str, Any]] = {}
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                for message in messages:
                    _, alert = codec.decode(message.value)
                    alerts[alert["alert_id"]] = alert
        return alerts
    finally:
        await consumer.stop()


def test_the_backtest_of_the_demo_year_gives_the_live_matchers_alert_ids(
    kafka_bootstrap: str, database_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "hub.log"
    summary = json.loads(
        _hub(
            *("demo", "--scale", SCALE, "--seed", "2026", "--json"),
            *("--kafka", kafka_bootstrap, "--database-url", database_url),
            env={},
            log=log,
        )
    )
    kafka = {"HUB_KAFKA_BOOTSTRAP": kafka_bootstrap, "HUB_TOPIC_PREFIX": summary["topic_prefix"]}
    live = asyncio.run(_live_alerts(kafka_bootstrap, f"{summary['topic_prefix']}.alerts.v1"))
    assert len(live) == summary["alerts_total"] > 50

    events = tmp_path / "demo-year.avro"
    exported = json.loads(_hub("export", "events", str(events), "--json", env=kafka, log=log))
    # Re-sent events (answered 202, `duplicate` in the summary) are on the topics once.
    duplicates = sum(per.get("duplicate", 0) for per in summary["events"].values())
    assert duplicates > 0, summary["events"]
    assert exported["events"] == summary["events_total"] - duplicates

    report = json.loads(
        _hub(
            *("backtest", "--rules", str(DEFAULT_RULES_FILE), "--events", str(events), "--json"),
            env=kafka,
            log=log,
        )
    )
    per_rule = Counter(a["rule_id"] for a in live.values())
    assert {r: v["alerts"] for r, v in report["report"]["rules"].items()} == {
        r: per_rule[r] for r in report["report"]["rules"]
    }

    replayed = replay_file(load_ruleset(DEFAULT_RULES_FILE).rules, EventsFile(events))
    assert replayed.alerts.keys() == live.keys()
    for alert_id, alert in replayed.alerts.items():
        assert alert["raised_on"] == live[alert_id]["raised_on"]
        assert alert["deadline"] == live[alert_id]["deadline"]
        assert alert["event_ids"] == [c["event_id"] for c in live[alert_id]["contributions"]]

    # Straight from the topics, without a file: the same counts.
    from_topics = json.loads(
        _hub(
            *("backtest", "--rules", str(DEFAULT_RULES_FILE), "--events", "kafka", "--json"),
            env=kafka,
            log=log,
        )
    )
    assert from_topics["report"]["rules"] == report["report"]["rules"]
