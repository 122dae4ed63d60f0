import json
import uuid

import pytest

from tests.integration.fixtures import Hub, add_partner, debt_signal, new_address, published

pytestmark = pytest.mark.integration


def test_probe(hub: Hub) -> None:
    pid = f"probe-{uuid.uuid4().hex[:6]}"
    key = add_partner(hub, pid, "--type", "ZORG", "--event-type", "debt-signal", "--may-send-bsn")
    def show(label, r):
        print(label, r.status_code, r.text[:400])
    import httpx
    class C:
        def post(self, *a, **k):
            with httpx.Client(timeout=30) as c:
                return c.post(*a, **k)
        def put(self, *a, **k):
            with httpx.Client(timeout=30) as c:
                return c.put(*a, **k)
    hub.client = C()
    e = debt_signal(new_address(), "2025-11-03")
    e["partner_event_id"] = "nul\x00id"
    show("nul pid", hub.post("debt-signal", e, key))
    e = debt_signal(new_address(), "2025-11-03")
    e["resident"]["name"] = "nul\x00name"
    show("nul name", hub.post("debt-signal", e, key))
    e = debt_signal(new_address(), "2025-11-03")
    e["creditor_name"] = "nul\x00cred"
    show("nul creditor", hub.post("debt-signal", e, key))
    e = debt_signal(new_address(), "2025-11-03")
    e["address"]["street"] = "nul\x00street"
    show("nul street", hub.post("debt-signal", e, key))
    e = debt_signal(new_address(), "2025-11-03", wijk_code="WK016401")
    show("wijk", hub.post("debt-signal", e, key))
    e = debt_signal(new_address(), "2025-11-03", arrear_start_date="2025-12-01")
    show("arrear", hub.post("debt-signal", e, key))
    e = debt_signal(new_address(), "2025-11-03", crisis_kind="EVICTION")
    show("crisis", hub.post("debt-signal", e, key))
    e = debt_signal(new_address(), "2025-11-03")
    e["address"]["house_number"] = "12a"; e["address"]["house_letter"] = "B"
    show("letter twice", hub.post("debt-signal", e, key))
    e = debt_signal(new_address(), "2025-11-03")
    show("batch", hub.post_batch("debt-signal", [e, {**e, "wijk_code": "WK999901", "partner_event_id": "x"}], key))
    r = hub.client.post(f"{hub.stack.url('ingest')}/v1/events/debt-signal", content=b"\xff\xfe", headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    show("bad utf8", r)
    r = hub.client.post(f"{hub.stack.url('ingest')}/v1/events/debt-signal", content=b"{}", headers={"Authorization": f"Bearer {key}", "Content-Type": "text/plain"})
    show("text/plain", r)
    r = hub.client.put(f"{hub.stack.url('ingest')}/v1/events/debt-signal", content=b"{}", headers={"Authorization": f"Bearer {key}"})
    show("put", r)
    r = hub.client.post(f"{hub.stack.url('ingest')}/v1/events/debt-signal", content=json.dumps(debt_signal(new_address(), "2025-11-03", amount_eur=10**30)), headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    show("huge", r)
    r = hub.client.post(f"{hub.stack.url('ingest')}/v1/events/debt-signal", content=b'{"partner_event_id": "\\ud800"}', headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    show("surrogate", r)
    e = debt_signal(new_address(), "2025-11-03")
    e["partner_event_id"] = "\ud800x"
    r = hub.client.post(f"{hub.stack.url('ingest')}/v1/events/debt-signal", content=json.dumps(e), headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    show("surrogate pid", r)
    e = debt_signal(new_address(), "2025-11-03")
    e["resident"]["name"] = "\ud800x"
    r = hub.client.post(f"{hub.stack.url('ingest')}/v1/events/debt-signal", content=json.dumps(e), headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    show("surrogate name", r)
    e = debt_signal(new_address(), "2025-11-03")
    e["creditor_name"] = "\ud800x"
    r = hub.client.post(f"{hub.stack.url('ingest')}/v1/events/debt-signal", content=json.dumps(e), headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    show("surrogate creditor", r)
    print([p["partner_event_id"] for p in published(hub, "debt-signal", pid)])
    assert False
