"""`hub bench ingest` on the session's Kafka and PostgreSQL: figures for the ways asked for,
each way's events all accepted (the command checks that as it goes), and a way it does not
know refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "bench", "ingest", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},  # the refusal on one line
        timeout=600,
        check=False,
    )


def test_the_bench_measures_the_ways_asked_for(kafka_bootstrap: str, database_url: str) -> None:
    done = bench(
        "--events",
        "200",
        "--way",
        "upload",
        "--way",
        "batch",
        "--kafka",
        kafka_bootstrap,
        "--database-url",
        database_url,
        "--json",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    # In the order of the channels, whatever the order asked.
    assert [f["way"] for f in figures] == ["batch", "upload"]
    for figure in figures:
        assert figure["events"] == 200 and figure["events_per_second"] > 0, figure
        # Not measured one at a time: there is nothing to hold them against.
        assert figure["ratio_to_http"] is None, figure


def test_a_way_the_bench_does_not_know_is_refused_by_name() -> None:
    done = bench("--way", "ftp")
    assert done.returncode == 2
    assert "'ftp' is none of http, batch, upload, kafka" in done.stderr
