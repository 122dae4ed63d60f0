"""Counting proves nothing is lost: on every way in, events offered = accepted + duplicate +
rejected, as answered and as counted in the metrics, and the accepted events are exactly
what is on the source topic. And a 100,000-row file goes through in flat memory."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.fixtures import (
    Hub,
    add_partner,
    debt_signal,
    new_address,
    published,
    service_metric,
)
from tests.integration.test_ingest_ways import (
    csv_file,
    intake_record,
    letters,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration
DAY = "2025-11-03"


def counted(hub: Hub, channel: str) -> dict[str, float]:
    """Ingest's debt-signal counts of one channel, summed over partner types and reasons."""
    totals = {"offered": 0.0, "accepted": 0.0, "duplicate": 0.0, "rejected": 0.0}
    text = httpx.get(f"{hub.stack.url('ingest')}/metrics").text
    for family in text_string_to_metric_families(text):
        kind = family.name.removeprefix("hub_ingest_events_")
        if kind not in totals:
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_total")
                and labels.get("channel") == channel
                and labels.get("event_type") == "debt-signal"
            ):
                totals[kind] += sample.value
    return totals


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, int]:
    return {k: round(after[k] - before[k]) for k in after}


def mixed(n: int) -> list[dict[str, Any]]:
    """n events, every third one broken (a postcode that does not exist)."""
    events = [debt_signal(new_address(), DAY, creditor_type="ZORG") for _ in range(n)]
    for event in events[::3]:
        event["address"]["postcode"] = "0000 XX"
    return events


def test_on_every_way_in_offered_is_accepted_plus_rejected_and_accepted_is_published(
    hub: Hub,
) -> None:
    partner_id = f"zorg-{uuid.uuid4().hex[:8]}"
    key = add_partner(hub, partner_id, "--type", "ZORG", "--event-type", "debt-signal")
    accepted: set[str] = set()

    # One event at a time, each sent twice.
    before = counted(hub, "http")
    singles = mixed(9)
    answers = [hub.post("debt-signal", e, key) for e in singles + singles]
    codes = [r.status_code for r in answers]
    assert len(codes) == codes.count(202) + codes.count(422) == 18
    assert delta(counted(hub, "http"), before) == {
        "offered": 18,
        "accepted": 6,
        "duplicate": 6,
        "rejected": 6,
    }
    accepted |= {e["partner_event_id"] for e, c in zip(singles, codes, strict=False) if c == 202}

    # A batch holding a repeat of an accepted single event.
    before = counted(hub, "batch")
    batch = [*mixed(30), singles[1]]
    report = hub.post_batch("debt-signal", batch, key).json()
    assert report["accepted"] + report["duplicate"] + report["rejected"] == len(batch)
    assert (
        delta(counted(hub, "batch"), before)
        == {
            "offered": len(batch),
            "accepted": report["accepted"],
            "duplicate": report["duplicate"],
            "rejected": report["rejected"],
        }
        == {"offered": 31, "accepted": 20, "duplicate": 1, "rejected": 10}
    )
    accepted |= {
        batch[r["index"]]["partner_event_id"]
        for r in report["results"]
        if r["status"] == "accepted"
    }

    # A file.
    before = counted(hub, "upload")
    rows = mixed(30)
    done = hub.finished_upload(
        hub.upload("debt-signal", csv_file(rows), key).json()["upload_id"], key
    )
    assert done["rows"] == {"read": 30, "accepted": 20, "duplicate": 0, "rejected": 10}
    assert delta(counted(hub, "upload"), before) == {
        "offered": 30,
        "accepted": 20,
        "duplicate": 0,
        "rejected": 10,
    }
    bad_lines = {p["line"] for p in done["problems"]}
    accepted |= {e["partner_event_id"] for line, e in enumerate(rows, 2) if line not in bad_lines}

    # Kafka intake: rejected records are the dead letters.
    before = counted(hub, "kafka")
    records = mixed(12)
    produce(hub, [(intake_record(e), partner_id) for e in records])

    def all_counted() -> dict[str, int] | None:
        now = delta(counted(hub, "kafka"), before)
        return now if now["accepted"] + now["rejected"] == len(records) else None

    assert wait_for(all_counted, "the intake records") == {
        "offered": 12,
        "accepted": 8,
        "duplicate": 0,
        "rejected": 4,
    }
    assert len(letters(hub, "--partner", partner_id)) == 4
    accepted |= {e["partner_event_id"] for e in records[1::3] + records[2::3]}

    on_topic = [e["partner_event_id"] for e in published(hub, "debt-signal", partner_id)]
    assert len(on_topic) == len(set(on_topic)) == len(accepted) == 6 + 20 + 20 + 8
    assert set(on_topic) == accepted


def test_one_event_is_authenticated_before_its_body_is_read_and_broken_json_is_counted(
    hub: Hub,
) -> None:
    partner_id = f"zorg-{uuid.uuid4().hex[:8]}"
    key = add_partner(hub, partner_id, "--type", "ZORG", "--event-type", "debt-signal")
    url = f"{hub.stack.url('ingest')}/v1/events"

    def send(event_type: str, body: bytes, api_key: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        return hub.client.post(f"{url}/{event_type}", content=body, headers=headers)

    def offered() -> float:
        labels = {"event_type": "debt-signal", "partner_type": "ZORG", "channel": "http"}
        return service_metric(hub, "ingest", "hub_ingest_events_offered_total", **labels)

    def invalid() -> float:
        labels = {"event_type": "debt-signal", "reason": "invalid", "channel": "http"}
        return service_metric(hub, "ingest", "hub_ingest_events_rejected_total", **labels)

    before = counted(hub, "http"), offered(), invalid()
    # Refused as a whole, before the body: no event offered.
    stranger = send("debt-signal", b'{"broken', "no-such-key")
    assert stranger.status_code == 401 and fields_of(stranger) == ["Authorization"]
    forbidden = send("wvggz-report", b'{"broken', key)
    assert forbidden.status_code == 403 and fields_of(forbidden) == ["event_type"]
    assert (counted(hub, "http"), offered(), invalid()) == before

    # Read and refused: offered and rejected as invalid, the field named.
    broken = send("debt-signal", b'{"broken', key)
    assert broken.status_code == 422 and fields_of(broken) == ["body"], broken.text
    not_an_object = send("debt-signal", b"[1, 2]", key)
    assert not_an_object.status_code == 422 and fields_of(not_an_object) == ["body"]
    event = debt_signal(new_address(), DAY, creditor_type="ZORG")
    event["address"]["postcode"] = "0000 XX"
    wrong = send("debt-signal", json.dumps(event).encode(), key)
    assert wrong.status_code == 422 and fields_of(wrong) == ["address.postcode"], wrong.text
    assert "Canary" not in wrong.text
    assert delta(counted(hub, "http"), before[0]) == {
        "offered": 3,
        "accepted": 0,
        "duplicate": 0,
        "rejected": 3,
    }
    assert (offered() - before[1], invalid() - before[2]) == (3, 3)
    assert published(hub, "debt-signal", partner_id) == []


def fields_of(answer: httpx.Response) -> list[str]:
    return [e["field"] for e in answer.json()["errors"]]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def rows_file(n: int, broken_every: int) -> tuple[bytes, set[int]]:
    """A debt-signal file of n rows, each its own household; every `broken_every`-th row has
    a postcode that does not exist. Returns the file and the lines of the broken rows."""
    # Not hex alone: "1234ab-5" would read as a postcode with a house number to the privacy scan.
    run = f"run{uuid.uuid4().hex[:6]}"
    header = (
        "partner_event_id;resident.name;resident.birth_date;address.street;"
        "address.house_number;address.postcode;address.city;municipality_code;creditor_type;"
        "creditor_name;amount_eur;arrear_start_date;signal_date\n"
    )
    lines, broken = [header], set()
    for i in range(n):
        postcode = f"7{5 + i // 90_000}{(i // 1000) % 90 + 10:02d} AB"
        if i % broken_every == broken_every - 1:
            postcode = "0000 XX"
            broken.add(i + 2)  # the header is line 1
        lines.append(
            f"{run}-{i};Test Persoon {i};01-02-1970;Teststraat;{i % 1000 + 1};{postcode};"
            f"Enschede;GM0153;ZORG;Zorgverzekeraar;{100 + i % 900};01-01-2025;03-11-2025\n"
        )
    return "".join(lines).encode(), broken


def upload_peak(hub: Hub, key: str, n: int) -> tuple[dict[str, Any], float, float]:
    """Uploads n rows; returns the report, ingest's memory before and its peak meanwhile."""
    content, broken = rows_file(n, 1000)
    pid = hub.stack.pid("ingest")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets the peak (VmHWM) to now
    before = peak_rss_mib(pid)
    response = hub.upload("debt-signal", content, key)
    assert response.status_code == 202, response.text
    report = hub.finished_upload(response.json()["upload_id"], key, timeout=900)
    assert report["status"] == "done"
    assert [p["line"] for p in report["problems"]] == sorted(broken)
    assert {p["field"] for p in report["problems"]} == {"address.postcode"}
    assert report["rows"] == {
        "read": n,
        "accepted": n - len(broken),
        "duplicate": 0,
        "rejected": len(broken),
    }
    return report, before, peak_rss_mib(pid)


def test_a_100000_row_file_is_reported_per_row_in_flat_memory(hub: Hub) -> None:
    partner_id = f"zorg-{uuid.uuid4().hex[:8]}"
    key = add_partner(hub, partner_id, "--type", "ZORG", "--event-type", "debt-signal")
    upload_peak(hub, key, 10_000)  # warms ingest up: imports, pools, buffers
    small, small_before, small_peak = upload_peak(hub, key, 20_000)
    big, big_before, big_peak = upload_peak(hub, key, 100_000)
    # The session's matcher has 129,870 events to read: the tests after this one wait for
    # their alerts a minute at most, so they start once it has read them, whatever this
    # test's assertions find.
    started = time.monotonic()
    wait_for(lambda: hub.matcher_lag() == 0, "the matcher to read the files' events", 1800)
    print(f"matcher caught up {time.monotonic() - started:.0f} s after the upload's report")
    small_growth, big_growth = small_peak - small_before, big_peak - big_before
    small_mib, big_mib = small["size_bytes"] / 2**20, big["size_bytes"] / 2**20
    print(
        f"ingest peak RSS growth: 20,000 rows {small_growth:.1f} MiB (file {small_mib:.1f} "
        f"MiB), 100,000 rows {big_growth:.1f} MiB (file {big_mib:.1f} MiB)"
    )
    # Holding the file whole, as bytes alone, would take all of its size (measured: about
    # 1 MiB for the 12.6 MiB file).
    assert big_growth < 0.5 * big_mib
    # Flat: 80,000 rows more cost less than a quarter of their bytes more (about 30 bytes a
    # row), so nothing of a row is kept once it is published.
    assert big_growth - small_growth < 0.25 * (big_mib - small_mib)
    assert len(published(hub, "debt-signal", partner_id)) == 9_990 + 19_980 + 99_900
