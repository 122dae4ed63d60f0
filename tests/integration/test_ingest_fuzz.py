"""Fuzzes ingest's HTTP API: schemathesis against the running service's OpenAPI document,
hypothesis mutations of valid events, and CSV files broken cell by cell and as a whole. No
answer is a 5xx, every refusal names the field at fault, the identity planted in an event
never comes back, and the source topics hold exactly the events that were answered as
accepted: nothing of what was refused.

Every request of this file is made by partners registered for this file only, and every
answer goes into `LEDGER`; the last test holds the ledger against the topics and the metrics.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import json
import string
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import StringConstraints, TypeAdapter
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet

from services.ingest.csvfile import columns, write_csv
from services.ingest.models import MODELS
from services.shared.events import EventType
from services.shared.identity import bsn_is_valid, normalise_postcode, parse_house_number
from services.shared.region import MUNICIPALITIES
from tests.integration.fixtures import (
    Hub,
    add_partner,
    base_event,
    debt_signal,
    new_address,
    published,
    service_metric,
)

pytestmark = pytest.mark.integration

DAY = "2025-11-03"
EVENT_TYPES = [t.value for t in EventType]
#: Derandomized: the same requests on every run, so a failure in CI is one you can replay.
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
SCHEMATHESIS_EXAMPLES = 150

#: The identity planted in every event: it must never come back in an answer.
CANARY_NAME = "Canary Fuzzpersoon"
CANARY_BIRTH_DATE = "1961-07-23"
CANARY_PHONE = "+31 6 9876 5432"
CANARY_BSN = "111222333"

#: A partner type that may publish each event type (none may publish them all).
PARTNER_TYPES = {
    "debt-signal": "ZORG",
    "wvggz-report": "GGD_MELDFUNCTIE",
    "streettriage-handover": "STREETTRIAGE",
    "care-indication": "WMO_LOKET",
}
NO_BSN = "debt-signal without BSN"
#: The partner type of each event type's uploader; a water company may not send a BSN.
UPLOADER_TYPES = {
    "debt-signal": "WATER",
    "wvggz-report": "GGD_MELDFUNCTIE",
    "streettriage-handover": "STREETTRIAGE",
    "care-indication": "WIJKVERPLEGING",
}
TIME_FIELDS = {
    "debt-signal": "signal_date",
    "wvggz-report": "report_date",
    "streettriage-handover": "handover_date",
    "care-indication": "indication_date",
}
#: Answers that refuse the caller or the request as a whole, not a field of its content.
NOT_ABOUT_CONTENT = {401, 403, 404, 405, 429}
#: How ingest keeps a partner_event_id: the models strip whitespace from every string.
_AS_KEPT: TypeAdapter[str] = TypeAdapter(Annotated[str, StringConstraints(strip_whitespace=True)])


@dataclass(frozen=True)
class Partner:
    partner_id: str
    partner_type: str
    event_type: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass(frozen=True)
class Answer:
    """A response as this file checks it, from httpx or from schemathesis."""

    status: int
    replayed: bool
    payload: Any
    text: str

    @classmethod
    def of(cls, response: httpx.Response) -> Answer:
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        return cls(response.status_code, replayed, _json(response.content), response.text)

    @classmethod
    def of_schemathesis(cls, response: schemathesis.Response) -> Answer:
        replayed = response.headers.get("idempotent-replayed") == ["true"]
        text = response.content.decode("utf-8", "replace")
        return cls(response.status_code, replayed, _json(response.content), text)


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


@dataclass
class Ledger:
    """What this file's partners were answered, to hold against the topics and the metrics."""

    #: partner_id -> event_id -> partner_event_id as sent, of every event answered accepted.
    accepted: dict[str, dict[str, str]] = field(default_factory=dict)
    #: (event_type, partner_type, channel) -> events accepted for the first time.
    new: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    #: test -> HTTP status -> answers.
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    #: partner_id -> partner_event_id (as kept) of every row an upload report did not refuse.
    uploaded: dict[str, set[str]] = field(default_factory=dict)

    def answered(self, test: str, partner: Partner, batch: bool, sent: Any, answer: Answer) -> None:
        self.statuses.setdefault(test, Counter())[answer.status] += 1
        accepted = self.accepted.setdefault(partner.partner_id, {})
        counter = (partner.event_type, partner.partner_type, "batch" if batch else "http")
        if not batch and answer.status == 202:
            accepted[answer.payload["event_id"]] = sent["partner_event_id"]
            self.new[counter] += not answer.replayed
        if batch and answer.status == 200:
            for result in answer.payload["results"]:
                if result["status"] == "accepted":
                    accepted[result["event_id"]] = sent[result["index"]]["partner_event_id"]
                    self.new[counter] += not answer.replayed
                elif result["status"] == "duplicate":
                    # Only this file's requests reach its partners: a repeat is of one of them.
                    assert result["event_id"] in accepted, result


LEDGER = Ledger()


# --- what a refusal must look like --------------------------------------------------------


def fields_of(payload: Any) -> list[str]:
    """The fields an `{"errors": [...]}` refusal names; fails when it is no such refusal."""
    assert isinstance(payload, dict), payload
    errors = payload.get("errors")
    assert isinstance(errors, list) and errors, payload
    for error in errors:
        assert isinstance(error, dict) and set(error) == {"field", "message"}, error
        assert isinstance(error["field"], str) and error["field"], error
        assert isinstance(error["message"], str) and error["message"].strip(), error
    return [e["field"] for e in errors]


def _alternatives(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    if "$ref" in node:
        return _alternatives(schema, schema["$defs"][node["$ref"].rsplit("/", 1)[-1]])
    if "anyOf" in node:
        return [alt for option in node["anyOf"] for alt in _alternatives(schema, option)]
    return [node]


def _resolves(schema: dict[str, Any], node: dict[str, Any], sent: Any, name: str) -> bool:
    """Whether the dotted `name` leads through the model's fields, or the keys and indices of
    what was sent (an unknown key is refused by its name, which may hold dots itself)."""
    steps: dict[str, tuple[dict[str, Any], Any]] = {}
    for alternative in _alternatives(schema, node):
        for key, inner in alternative.get("properties", {}).items():
            steps[key] = (inner, sent.get(key) if isinstance(sent, dict) else None)
        if alternative.get("type") == "array" and isinstance(sent, list):
            steps.update({str(i): (alternative.get("items", {}), v) for i, v in enumerate(sent)})
    if isinstance(sent, dict):
        steps.update({k: ({}, v) for k, v in sent.items() if k not in steps})
    return any(
        name == key
        or (
            name.startswith(f"{key}.")
            and _resolves(schema, inner, value, name.removeprefix(f"{key}."))
        )
        for key, (inner, value) in steps.items()
    )


def names_a_field(event_type: str, name: str, sent: Any) -> bool:
    """Whether `name` is a field path of the event type's model or of the event as sent, or
    `body`: the event as a whole."""
    schema = MODELS[EventType(event_type)].model_json_schema()
    return name == "body" or _resolves(schema, schema, sent, name)


def assert_refusals_name_fields(event_type: str, batch: bool, sent: Any, answer: Answer) -> None:
    """Every 4xx answers `{"errors": [...]}`; one about the content names the fields at fault,
    and so does each rejected event of a batch report, whose counts agree with its results."""
    if 400 <= answer.status < 500:
        named = fields_of(answer.payload)  # every refusal answers {"errors": [...]}
        for name in named if answer.status not in NOT_ABOUT_CONTENT else []:
            assert name in {"body", "Idempotency-Key"} or (
                not batch and names_a_field(event_type, name, sent)
            ), f"{answer.status} names {name!r}, which is no field of the {event_type} sent"
    if batch and answer.status == 200:
        report = answer.payload
        assert [r["index"] for r in report["results"]] == list(range(len(sent))), report
        for result in report["results"]:
            if result["status"] == "rejected":
                for name in fields_of(result):
                    assert names_a_field(event_type, name, sent[result["index"]]), (
                        f"event {result['index']} rejected naming {name!r}, no field of it"
                    )
            else:
                assert result["status"] in {"accepted", "duplicate"}, result
        counts = Counter(r["status"] for r in report["results"])
        for status in ("accepted", "duplicate", "rejected"):
            assert report[status] == counts[status], report


# --- partners and metrics of this file -----------------------------------------------------


@dataclass(frozen=True)
class Setup:
    partners: dict[str, Partner]
    #: Event type -> the partner that sends this file's CSV uploads of it.
    uploaders: dict[str, Partner]
    #: hub_ingest_events_accepted_total before this file's first request.
    accepted_before: dict[tuple[str, str, str], float]


def accepted_counts(
    hub: Hub, partners: dict[str, Partner], uploaders: dict[str, Partner]
) -> dict[tuple[str, str, str], float]:
    """hub_ingest_events_accepted_total of the partners' (event type, partner type) by channel."""
    ways = [(p, channel) for p in partners.values() for channel in ("http", "batch")]
    return {
        (p.event_type, p.partner_type, channel): service_metric(
            hub,
            "ingest",
            "hub_ingest_events_accepted_total",
            channel=channel,
            event_type=p.event_type,
            partner_type=p.partner_type,
        )
        for p, channel in [*ways, *((p, "upload") for p in uploaders.values())]
    }


def new_partner(hub: Hub, event_type: str, partner_type: str, *extra: str) -> Partner:
    partner_id = f"fuzz-{partner_type.lower().replace('_', '-')}-{uuid.uuid4().hex[:8]}"
    key = add_partner(hub, partner_id, "--type", partner_type, "--event-type", event_type, *extra)
    return Partner(partner_id, partner_type, event_type, key)


@pytest.fixture(scope="module")
def fuzz(hub: Hub) -> Setup:
    """A partner of this file per event type (the debt-signal one may send a BSN), and one for
    debt signals that may not."""
    accounts: list[tuple[str, str, str, tuple[str, ...]]] = [
        (t, t, p, ()) for t, p in PARTNER_TYPES.items() if t != "debt-signal"
    ]
    accounts += [
        ("debt-signal", "debt-signal", PARTNER_TYPES["debt-signal"], ("--may-send-bsn",)),
        (NO_BSN, "debt-signal", "HUUR", ()),
    ]
    partners = {
        name: new_partner(hub, event_type, partner_type, *extra)
        for name, event_type, partner_type, extra in accounts
    }
    uploaders = {t: new_partner(hub, t, p) for t, p in UPLOADER_TYPES.items()}
    return Setup(partners, uploaders, accepted_counts(hub, partners, uploaders))


def send(hub: Hub, test: str, partner: Partner, body: Any, batch: bool = False) -> Answer:
    """Sends one event or a batch as `partner`, enters the answer in the ledger and checks
    what every answer must be: no 5xx, refusals that name fields."""
    if batch:
        response = hub.post_batch(partner.event_type, body, partner.key)
    else:
        response = hub.post(partner.event_type, body, partner.key)
    answer = Answer.of(response)
    LEDGER.answered(test, partner, batch, body, answer)
    assert answer.status < 500, answer.text
    assert_refusals_name_fields(partner.event_type, batch, body, answer)
    return answer


# --- valid events and how to break them ----------------------------------------------------


#: A valid value of each field of its own, per event type but debt-signal (`debt_signal`).
_OWN_FIELDS: dict[str, dict[str, Any]] = {
    "wvggz-report": {"report_date": DAY, "reporter_category": "NEIGHBOUR"},
    "streettriage-handover": {
        "handover_date": DAY,
        "outcome": "REFERRED_TO_GGZ",
        "problem_areas": ["FINANCES", "HOUSING"],
    },
    "care-indication": {
        "indication_date": DAY,
        "care_kind": "WMO",
        "message_type": "WMO301_ALLOCATION",
        "product_category": "02",
    },
}


def valid_event(event_type: str) -> dict[str, Any]:
    """A valid event of the type for a fresh household, carrying the canary identity."""
    address = new_address()
    if event_type == "debt-signal":
        event = debt_signal(
            address,
            DAY,
            creditor_type="ZORG",
            crisis=True,
            crisis_kind="EVICTION",
            warm_handover=True,
            missed_payments=3,
        )
    else:
        event = base_event(address, **_OWN_FIELDS[event_type])
    event["resident"] = {
        "name": CANARY_NAME,
        "birth_date": CANARY_BIRTH_DATE,
        "phone": CANARY_PHONE,
    }
    if event_type == "debt-signal":
        event["resident"]["bsn"] = CANARY_BSN
    return event


def planted(valid: dict[str, Any], sent: dict[str, Any]) -> list[str]:
    """The identity planted in a valid event that is still in the event as sent: none of it
    may appear in the answer."""
    postcode = valid["address"]["postcode"]
    values = [CANARY_NAME, CANARY_BIRTH_DATE, CANARY_PHONE, CANARY_BSN, postcode]
    as_sent = json.dumps(sent)
    return [v for v in [*values, postcode.replace(" ", "")] if v in as_sent]


def _put(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    event = copy.deepcopy(event)
    *parents, last = path.split(".")
    node = event
    for part in parents:
        node = node[part]
    node[last] = value
    return event


def _drop(event: dict[str, Any], path: str) -> dict[str, Any]:
    event = copy.deepcopy(event)
    *parents, last = path.split(".")
    node = event
    for part in parents:
        node = node[part]
    del node[last]
    return event


@dataclass(frozen=True)
class Break:
    """One thing broken in a valid event, and the refusal that must come back."""

    what: str
    change: Callable[[dict[str, Any]], dict[str, Any]] = field(repr=False)
    #: The refusal names one or more of these fields, and no other.
    fields: frozenset[str]
    status: int = 422
    #: Sent by this partner instead of the event type's own.
    partner: str | None = None


def _breaks(
    what: str, change: Callable[[dict[str, Any]], dict[str, Any]], *fields: str, **extra: Any
) -> Break:
    return Break(what, change, frozenset(fields), **extra)


def _setting(path: str, value: Any, *fields: str) -> Break:
    return _breaks(f"{path} = {value!r}", lambda e: _put(e, path, value), *(fields or (path,)))


def _schema(event_type: str) -> dict[str, Any]:
    return MODELS[EventType(event_type)].model_json_schema()


def _nested(event_type: str, name: str) -> dict[str, Any]:
    schema = _schema(event_type)
    nested: dict[str, Any] = schema["$defs"][schema["properties"][name]["$ref"].rsplit("/", 1)[-1]]
    return nested


def required_paths(event_type: str) -> list[str]:
    paths = list(_schema(event_type)["required"])
    for name in ("resident", "address"):
        paths += [f"{name}.{n}" for n in _nested(event_type, name)["required"]]
    return paths


def known_names(event_type: str, level: str) -> set[str]:
    if level == "":
        return set(_schema(event_type)["properties"])
    return set(_nested(event_type, level.rstrip("."))["properties"])


#: The JSON kind of every field (and whether null is allowed), per event type.
_COMMON_SHAPES = {
    "partner_event_id": ("str", False),
    "resident": ("object", False),
    "resident.name": ("str", False),
    "resident.birth_date": ("date", False),
    "resident.bsn": ("str", True),
    "resident.phone": ("str", True),
    "address": ("object", False),
    "address.street": ("str", False),
    "address.house_number": ("int", False),
    "address.house_letter": ("str", True),
    "address.house_number_addition": ("str", True),
    "address.postcode": ("str", False),
    "address.city": ("str", False),
    "municipality_code": ("str", False),
    "wijk_code": ("str", True),
}
SHAPES: dict[str, dict[str, tuple[str, bool]]] = {
    "debt-signal": {
        **_COMMON_SHAPES,
        "creditor_type": ("enum", False),
        "creditor_name": ("str", False),
        "amount_eur": ("int", False),
        "arrear_start_date": ("date", False),
        "signal_date": ("date", False),
        "crisis": ("bool", False),
        "crisis_kind": ("enum", True),
        "warm_handover": ("bool", False),
        "missed_payments": ("int", True),
    },
    "wvggz-report": {
        **_COMMON_SHAPES,
        "report_date": ("date", False),
        "reporter_category": ("enum", False),
    },
    "streettriage-handover": {
        **_COMMON_SHAPES,
        "handover_date": ("date", False),
        "outcome": ("enum", False),
        "problem_areas": ("list", False),
    },
    "care-indication": {
        **_COMMON_SHAPES,
        "indication_date": ("date", False),
        "care_kind": ("enum", False),
        "message_type": ("enum", False),
        "product_category": ("str", True),
    },
}

_LETTERS = st.text(string.ascii_letters, min_size=1, max_size=8)
_LISTS = st.lists(st.integers(-5, 5), max_size=3)
_OBJECTS = st.dictionaries(_LETTERS, st.integers(-5, 5), max_size=2)
#: Not whole, and not so small that it rounds to 0 (a date may be sent as a Unix time).
_FRACTIONS = st.floats(-1e6, 1e6).filter(lambda f: abs(f) > 0.01 and not f.is_integer())
#: Values of the wrong JSON kind (pydantic's lax mode takes "12" for 12 and "yes" for true).
_WRONG_KIND = {
    "str": st.one_of(st.integers(), _FRACTIONS, st.booleans(), _LISTS, _OBJECTS),
    "int": st.one_of(_FRACTIONS, _LETTERS, _LISTS, _OBJECTS),
    "bool": st.one_of(st.sampled_from(["misschien", "ja", "nee", "2", 2, -1, 0.5]), _LISTS),
    "date": st.one_of(st.booleans(), _FRACTIONS, _LISTS, _OBJECTS),
    "enum": st.one_of(st.integers(), st.booleans(), _LISTS, _OBJECTS),
    "list": st.one_of(_LETTERS, st.integers(), st.booleans(), _OBJECTS),
    "object": st.one_of(_LETTERS, st.integers(), st.booleans(), _LISTS),
}


@st.composite
def missing_required(draw: st.DrawFn, event_type: str) -> Break:
    path = draw(st.sampled_from(required_paths(event_type)))
    return _breaks(f"without {path}", lambda e: _drop(e, path), path)


@st.composite
def wrong_kind(draw: st.DrawFn, event_type: str) -> Break:
    path, (kind, nullable) = draw(st.sampled_from(sorted(SHAPES[event_type].items())))
    values = _WRONG_KIND[kind]
    if path == "address.house_number":
        # A house number may be written out ("12a"); a text that is none is the address's fault.
        values = st.one_of(_FRACTIONS, _LISTS, _OBJECTS)
    if not nullable:
        values = st.one_of(values, st.none())
    return _setting(path, draw(values))


_RANGES = {
    "address.house_number": (1, 99_999),
    "amount_eur": (1, 10_000_000),
    "missed_payments": (1, 600),
}


@st.composite
def out_of_range(draw: st.DrawFn, event_type: str) -> Break:
    ranges = {p: r for p, r in _RANGES.items() if p in SHAPES[event_type]}
    path = draw(st.sampled_from(sorted(ranges)))
    low, high = ranges[path]
    return _setting(
        path, draw(st.one_of(st.integers(max_value=low - 1), st.integers(min_value=high + 1)))
    )


def _enum_paths(event_type: str) -> dict[str, list[str]]:
    schema = _schema(event_type)
    found = {}
    for name, node in schema["properties"].items():
        for alternative in _alternatives(schema, node.get("items", node)):
            if "enum" in alternative:
                found[f"{name}.0" if "items" in node else name] = alternative["enum"]
    return found


@st.composite
def unknown_symbol(draw: st.DrawFn, event_type: str) -> Break:
    path, symbols = draw(st.sampled_from(sorted(_enum_paths(event_type).items())))
    value = draw(
        st.text(string.ascii_letters + "_- ", max_size=25).filter(
            lambda s: s.strip() not in symbols
        )
    )
    if path.endswith(".0"):  # a list of symbols: the unknown one after a known one
        name = path.removesuffix(".0")
        return _breaks(
            f"{name} = [{symbols[0]!r}, {value!r}]",
            lambda e: _put(e, name, [symbols[0], value]),
            f"{name}.1",
        )
    return _setting(path, value)


def _date_fields(event_type: str) -> list[str]:
    return sorted(p for p, (kind, _) in SHAPES[event_type].items() if kind == "date")


@st.composite
def no_date(draw: st.DrawFn, event_type: str) -> Break:
    year = draw(st.integers(1900, 2024))
    day = st.integers(1, 28)
    value = draw(
        st.one_of(
            st.builds(lambda m, d: f"{year:04d}-{m:02d}-{d:02d}", st.integers(13, 99), day),
            st.builds(
                lambda m, d: f"{year:04d}-{m:02d}-{d:02d}", st.integers(1, 12), st.integers(32, 99)
            ),
            st.builds(lambda d: f"{year:04d}-02-{d}", st.sampled_from([30, 31])),
            st.builds(lambda m, d: f"{d:02d}-{m:02d}-{year:04d}", st.integers(1, 12), day),
            st.builds(lambda m, d: f"{d}/{m}/{year}", st.integers(1, 12), day),
            st.sampled_from(["", "gisteren", "2025-11", "2025-11-03T12:30:00", "3 november 2025"]),
        )
    )
    return _setting(draw(st.sampled_from(_date_fields(event_type))), value)


@st.composite
def date_out_of_range(draw: st.DrawFn, event_type: str) -> Break:
    """Dates that are dates, but not possible here: a birth in the future or before 1900, an
    event more than the tolerance ahead, an arrear that starts after its signal."""
    today = dt.date.today()
    time_field = TIME_FIELDS[event_type]
    choices = [
        _setting(
            "resident.birth_date",
            (today + dt.timedelta(days=draw(st.integers(1, 3650)))).isoformat(),
        ),
        _setting("resident.birth_date", f"{draw(st.integers(1000, 1899))}-06-15"),
        # Three days or more: the hub's tolerance is one day, and its today may be ours + 1.
        _setting(time_field, (today + dt.timedelta(days=draw(st.integers(3, 3650)))).isoformat()),
    ]
    if event_type == "debt-signal":
        late = dt.date.fromisoformat(DAY) + dt.timedelta(days=draw(st.integers(1, 1000)))
        choices.append(
            _setting("arrear_start_date", late.isoformat(), "signal_date", "arrear_start_date")
        )
    return draw(st.sampled_from(choices))


@st.composite
def unknown_field(draw: st.DrawFn, event_type: str) -> Break:
    level = draw(st.sampled_from(["", "resident.", "address."]))
    known = known_names(event_type, level)
    name = draw(
        st.one_of(
            # Names that a field path could mistake for something else.
            st.sampled_from(["body", "0", "errors", "Partner_Event_Id"]),
            st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=20),
        ).filter(lambda n: n not in known)
    )
    value = draw(st.one_of(st.none(), st.integers(), _LETTERS, st.booleans()))
    if name[0].isdigit():
        # Not a name a partner's system would give a field (it might be a BSN put in the
        # wrong place): not repeated; the refusal names the object that holds it.
        return _setting(f"{level}{name}", value, level.rstrip(".") or "body")
    return _setting(f"{level}{name}", value)


def _refused_postcode(value: str) -> bool:
    try:
        normalise_postcode(value.strip())
    except ValueError:
        return True
    return False


@st.composite
def bad_postcode(draw: st.DrawFn, event_type: str) -> Break:
    letters = st.text(string.ascii_uppercase, min_size=2, max_size=2)
    value = draw(
        st.one_of(
            st.builds(lambda d, x: f"0{d:03d} {x}", st.integers(0, 999), letters),
            st.builds(lambda d: f"{d}", st.integers(1000, 9999)),
            st.builds(
                lambda d, x: f"{d} {x}",
                st.integers(1000, 9999),
                st.sampled_from(["SA", "SD", "SS", "A", "ABC", "A1", "ÄB"]),
            ),
            st.text(max_size=12),
        ).filter(_refused_postcode)
    )
    return _setting("address.postcode", value)


@st.composite
def outside_twente(draw: st.DrawFn, event_type: str) -> Break:
    value = draw(
        st.one_of(
            st.integers(0, 9999)
            .map(lambda n: f"GM{n:04d}")
            .filter(lambda c: c not in MUNICIPALITIES),
            st.sampled_from(["gm0153", "GM153", "GM01534", "0153", "Enschede", "", "BU01530000"]),
        )
    )
    return _setting("municipality_code", value)


@st.composite
def wijk_elsewhere(draw: st.DrawFn, event_type: str) -> Break:
    """The events are in Enschede (GM0153); the wijk lies elsewhere or is no wijk code."""
    value = draw(
        st.one_of(
            st.builds(
                lambda m, n: f"WK{m[2:]}{n:02d}",
                st.sampled_from(sorted(set(MUNICIPALITIES) - {"GM0153"})),
                st.integers(0, 99),
            ),
            st.integers(0, 999_999).map(lambda n: f"WK{n:06d}").filter(lambda w: w[2:6] != "0153"),
            st.sampled_from(["WK0153", "WK01530", "wk015301", "BU01530101", "015301", "WK0153011"]),
        )
    )
    return _setting("wijk_code", value)


@st.composite
def bad_bsn(draw: st.DrawFn, event_type: str) -> Break:
    value = draw(
        st.one_of(
            st.text("0123456789", min_size=9, max_size=9).filter(lambda s: not bsn_is_valid(s)),
            st.text("0123456789", max_size=12).filter(lambda s: len(s) != 9),
            st.sampled_from(["111-222-333", "abcdefghi", "000000000", "11122233x"]),
        )
    )
    return _setting("resident.bsn", value)


def bsn_from_the_wrong_partner(event_type: str) -> st.SearchStrategy[Break]:
    return st.just(
        _breaks(
            "a valid BSN from a partner that may not send one",
            lambda e: e,
            "resident.bsn",
            partner=NO_BSN,
        )
    )


@st.composite
def house_number_twice(draw: st.DrawFn, event_type: str) -> Break:
    """A letter or addition written in the house number and sent on its own as well."""
    number = draw(st.integers(1, 9999))
    letter, other = draw(st.sampled_from(string.ascii_letters)), draw(st.sampled_from("ABCXYZ"))
    addition = draw(st.sampled_from(["II", "BIS", "HS", "3", "2A"]))
    written, extra = draw(
        st.sampled_from(
            [
                (f"{number}{letter}", {"house_letter": other}),
                (f"{number} {letter}-2", {"house_letter": other}),
                (f"{number}-{addition}", {"house_number_addition": "1"}),
            ]
        )
    )

    def change(event: dict[str, Any]) -> dict[str, Any]:
        return {**event, "address": {**event["address"], "house_number": written, **extra}}

    # The rule is the address's, between its fields: the model names the address (or one).
    return _breaks(
        f"house_number = {written!r} with {extra}",
        change,
        "address",
        "address.house_number",
        *(f"address.{k}" for k in extra),
    )


def _refused_addition(value: str) -> bool:
    if len(value.strip()) > 4:
        return True
    try:
        parse_house_number(f"1 {value.strip()}")
    except ValueError:
        return True
    return False


@st.composite
def bad_format(draw: st.DrawFn, event_type: str) -> Break:
    """Strings of the right kind in the wrong form or length."""
    choices = [
        st.sampled_from(["AB", "1", "-", "ß", "é", "a1"]).map(
            lambda v: _setting("address.house_letter", v)
        ),
        st.text(string.punctuation + string.ascii_letters, min_size=1, max_size=8)
        .filter(_refused_addition)
        .map(lambda v: _setting("address.house_number_addition", v)),
        st.sampled_from(
            ["12345", "telefoon", "+31 6 1234 567x", "++31612345678", "06-1234567-"]
        ).map(lambda v: _setting("resident.phone", v)),
        st.sampled_from(["", "   ", "x" * 201]).map(lambda v: _setting("resident.name", v)),
        st.sampled_from(["", "  ", "x" * 201]).map(lambda v: _setting("address.street", v)),
        st.sampled_from(["", "y" * 101]).map(lambda v: _setting("address.city", v)),
        st.sampled_from(["", "   ", "p" * 101]).map(lambda v: _setting("partner_event_id", v)),
    ]
    if event_type == "debt-signal":
        choices.append(st.sampled_from(["", "c" * 201]).map(lambda v: _setting("creditor_name", v)))
    if event_type == "care-indication":
        choices.append(
            st.sampled_from(["2", "123", "AB", "0x"]).map(lambda v: _setting("product_category", v))
        )
    return draw(st.one_of(choices))


@st.composite
def between_fields(draw: st.DrawFn, event_type: str) -> Break:
    """The type's own rules between fields, each broken; the model names the later field."""
    if event_type == "debt-signal":
        return draw(
            st.sampled_from(
                [
                    _setting("crisis", False, "crisis_kind", "crisis"),
                    _breaks(
                        "crisis left out, crisis_kind given",
                        lambda e: _drop(e, "crisis"),
                        "crisis_kind",
                        "crisis",
                    ),
                ]
            )
        )
    if event_type == "care-indication":
        kind, message = draw(
            st.sampled_from(
                [
                    ("WIJKVERPLEGING", "WMO305_START"),
                    ("WIJKVERPLEGING", "WMO301_ALLOCATION"),
                    ("WMO", "ZVW_INDICATION"),
                ]
            )
        )
        return _breaks(
            f"care_kind {kind} with message_type {message}",
            lambda e: {**e, "care_kind": kind, "message_type": message},
            "message_type",
            "care_kind",
        )
    assert event_type == "streettriage-handover"
    areas = draw(
        st.lists(st.sampled_from(["FINANCES", "HOUSING", "OTHER"]), min_size=7, max_size=10)
    )
    return _setting("problem_areas", areas)


#: Every way of breaking a valid event, and the event types it applies to.
BREAKS: dict[str, tuple[Callable[[str], st.SearchStrategy[Break]], list[str]]] = {
    "missing required field": (missing_required, EVENT_TYPES),
    "value of the wrong kind": (wrong_kind, EVENT_TYPES),
    "number out of range": (out_of_range, EVENT_TYPES),
    "unknown enum symbol": (unknown_symbol, EVENT_TYPES),
    "no date": (no_date, EVENT_TYPES),
    "date out of range": (date_out_of_range, EVENT_TYPES),
    "unknown field": (unknown_field, EVENT_TYPES),
    "bad postcode": (bad_postcode, EVENT_TYPES),
    "municipality outside Twente": (outside_twente, EVENT_TYPES),
    "wijk outside the municipality": (wijk_elsewhere, EVENT_TYPES),
    "BSN failing the eleven-check": (bad_bsn, ["debt-signal"]),
    "BSN from a partner that may not": (bsn_from_the_wrong_partner, ["debt-signal"]),
    "house number letter twice": (house_number_twice, EVENT_TYPES),
    "string of the wrong form": (bad_format, EVENT_TYPES),
    "rule between fields": (
        between_fields,
        ["debt-signal", "care-indication", "streettriage-handover"],
    ),
}


def breaks_of(event_type: str) -> st.SearchStrategy[Break]:
    return st.one_of(
        [strategy(event_type) for strategy, types in BREAKS.values() if event_type in types]
    )


# --- 1. schemathesis against the live OpenAPI document -----------------------------------


# `schemathesis.pytest.from_fixture` does not run under pytest 9.2 (it sets the removed
# `Function._nodeid`), so each operation's schemathesis strategies run under hypothesis here.


@pytest.fixture(scope="module")
def openapi(hub: Hub) -> schemathesis.BaseSchema:
    """The OpenAPI document as the running ingest serves it. Every case is sent with the
    partner's key (so the bearer scheme is not fuzzed: a 401 tells nothing about the body)."""
    config = schemathesis.Config.from_dict({"generation": {"with-security-parameters": False}})
    return schemathesis.openapi.from_url(f"{hub.stack.url('ingest')}/openapi.json", config=config)


def _fitting(event_type: str, event: Any) -> Any:
    """A schema-valid event made valid for the hub too (region, postcode, dates, BSN), with
    the strings and numbers that were generated: those then reach the database and the topic."""
    if not isinstance(event, dict):
        return event
    event = {**event, "municipality_code": "GM0153", TIME_FIELDS[event_type]: DAY}
    if event.get("wijk_code") is not None:
        event["wijk_code"] = "WK015301"
    if isinstance(event.get("address"), dict):
        event["address"] = {**event["address"], "postcode": "7511 AB"}
        event["address"].pop("house_number_addition", None)
    if isinstance(event.get("resident"), dict):
        event["resident"] = {**event["resident"], "birth_date": "1970-01-01"}
        if event["resident"].get("bsn") is not None:
            event["resident"]["bsn"] = CANARY_BSN
    if event_type == "debt-signal":
        event["arrear_start_date"] = "2025-01-01"
        if event.get("crisis") is not True:
            event.pop("crisis_kind", None)
    if event_type == "care-indication":
        nursing = event.get("care_kind") == "WIJKVERPLEGING"
        event["message_type"] = "ZVW_INDICATION" if nursing else "WMO305_START"
    return event


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


OPERATIONS = [
    pytest.param(t, batch, id=f"POST /v1/events/{t}{'/batch' if batch else ''}")
    for t in EVENT_TYPES
    for batch in (False, True)
]


@pytest.mark.parametrize(("event_type", "batch"), OPERATIONS)
def test_schemathesis_gets_no_5xx_and_every_refusal_names_its_field(
    openapi: schemathesis.BaseSchema,
    session: requests.Session,
    fuzz: Setup,
    event_type: str,
    batch: bool,
) -> None:
    partner = fuzz.partners[event_type]
    operation = openapi[f"/v1/events/{event_type}{'/batch' if batch else ''}"]["POST"]

    def sometimes_fitting(
        case: schemathesis.Case[Any],
    ) -> st.SearchStrategy[schemathesis.Case[Any]]:
        # Positive cases fit the schema but almost never the hub (a Twente municipality, a
        # real postcode, dates in range): half of them are made to fit, so that generated
        # strings and numbers also travel the accepting path (database, encryption, topic).
        # Generated Idempotency-Keys are short and repeat (409 before the body is looked at):
        # a fitted case gets one of its own.
        def fit(yes: bool) -> schemathesis.Case[Any]:
            if yes:
                body = case.body
                case.body = (
                    [_fitting(event_type, e) for e in body]
                    if isinstance(body, list)
                    else _fitting(event_type, body)
                )
                if case.headers and "Idempotency-Key" in case.headers:
                    case.headers["Idempotency-Key"] = uuid.uuid4().hex
            return case

        return st.booleans().map(fit)

    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE).flatmap(sometimes_fitting),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    def refusals_name_their_fields(
        ctx: schemathesis.CheckContext,
        response: schemathesis.Response,
        case: schemathesis.Case[Any],
    ) -> bool:
        answer = Answer.of_schemathesis(response)
        sent = None if isinstance(case.body, NotSet) else case.body
        LEDGER.answered("schemathesis", partner, batch, sent, answer)
        assert_refusals_name_fields(event_type, batch, sent, answer)
        return True

    @settings(FUZZ, max_examples=SCHEMATHESIS_EXAMPLES)
    @given(case=cases)
    def answers(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(
            session=session,
            headers=partner.auth,
            checks=[not_a_server_error, refusals_name_their_fields],
        )

    answers()


def test_schemathesis_gets_no_5xx_from_the_upload_report(
    openapi: schemathesis.BaseSchema, session: requests.Session, fuzz: Setup
) -> None:
    partner = fuzz.partners["debt-signal"]
    operation = openapi["/v1/uploads/{upload_id}"]["GET"]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    def refusals_name_their_fields(
        ctx: schemathesis.CheckContext,
        response: schemathesis.Response,
        case: schemathesis.Case[Any],
    ) -> bool:
        if response.status_code >= 400:
            assert fields_of(_json(response.content)), response.content[:300]
        return True

    @settings(FUZZ, max_examples=SCHEMATHESIS_EXAMPLES)
    @given(case=cases)
    # Past a PostgreSQL integer, and NUL, which PostgreSQL cannot compare.
    @example(case=operation.Case(path_parameters={"upload_id": "x"}, query={"after_line": 2**31}))
    @example(case=operation.Case(path_parameters={"upload_id": "\x00"}))
    def answers(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(
            session=session,
            headers=partner.auth,
            checks=[not_a_server_error, refusals_name_their_fields],
        )

    answers()


# --- 2. hypothesis: valid events, each broken in one known way ----------------------------


@pytest.mark.parametrize("kind", list(BREAKS))
@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_an_event_broken_in_one_way_is_refused_naming_that_field(
    hub: Hub, fuzz: Setup, kind: str, data: st.DataObject
) -> None:
    strategy, types = BREAKS[kind]
    event_type = data.draw(st.sampled_from(types), label="event_type")
    broken = data.draw(strategy(event_type), label="break")
    valid = valid_event(event_type)
    event = broken.change(valid)
    partner = fuzz.partners[broken.partner or event_type]

    answer = send(hub, "broken events", partner, event)
    assert answer.status == broken.status, (broken.what, answer.text)
    named = set(fields_of(answer.payload))
    assert named <= broken.fields, (broken.what, answer.text)
    for value in planted(valid, event):
        assert value not in answer.text, (broken.what, value)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_a_batch_rejects_each_broken_event_by_field_and_accepts_its_neighbours(
    hub: Hub, fuzz: Setup, event_type: str, data: st.DataObject
) -> None:
    breaks = data.draw(
        st.lists(breaks_of(event_type).filter(lambda b: b.partner is None), min_size=1, max_size=3),
        label="breaks",
    )
    neighbours = data.draw(st.integers(1, 3), label="valid events")
    order = data.draw(st.permutations([*breaks, *[None] * neighbours]), label="order")
    originals = [valid_event(event_type) for _ in order]
    events = [e if b is None else b.change(e) for b, e in zip(order, originals, strict=True)]

    answer = send(hub, "broken batches", fuzz.partners[event_type], events, batch=True)
    assert answer.status == 200, answer.text
    report = answer.payload
    assert (report["accepted"], report["duplicate"], report["rejected"]) == (
        neighbours,
        0,
        len(breaks),
    )
    for broken, result, original, event in zip(
        order, report["results"], originals, events, strict=True
    ):
        if broken is None:
            assert result["status"] == "accepted", result
            continue
        assert result["status"] == "rejected", (broken.what, result)
        assert set(fields_of(result)) <= broken.fields, (broken.what, result)
        for value in planted(original, event):
            assert value not in answer.text, (broken.what, value)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_a_partner_event_id_used_again_for_other_content_gets_409(
    hub: Hub, fuzz: Setup, event_type: str
) -> None:
    partner = fuzz.partners[event_type]
    first = valid_event(event_type)
    other = {**valid_event(event_type), "partner_event_id": first["partner_event_id"]}
    accepted = send(hub, "conflicts", partner, first)
    assert accepted.status == 202
    conflict = send(hub, "conflicts", partner, other)
    assert conflict.status == 409
    assert fields_of(conflict.payload) == ["partner_event_id"]
    again = send(hub, "conflicts", partner, first)
    assert again.status == 202 and again.replayed and again.payload == accepted.payload

    new = valid_event(event_type)
    clash = {**valid_event(event_type), "partner_event_id": new["partner_event_id"]}
    batch = send(hub, "conflicts", partner, [new, clash, other], batch=True)
    results = batch.payload["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected", "rejected"]
    assert [fields_of(r) for r in results[1:]] == [["partner_event_id"]] * 2


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_an_event_type_the_partner_may_not_publish_gets_403(
    hub: Hub, fuzz: Setup, event_type: str
) -> None:
    partner = fuzz.partners[event_type]
    for other in sorted(set(EVENT_TYPES) - {event_type}):
        stranger = Partner(partner.partner_id, partner.partner_type, other, partner.key)
        assert send(hub, "forbidden types", stranger, valid_event(other)).status == 403
        assert (
            send(hub, "forbidden types", stranger, [valid_event(other)], batch=True).status == 403
        )


_FREE_TEXT = [
    "partner_event_id",
    "resident.name",
    "address.street",
    "address.city",
    "creditor_name",
]


@settings(FUZZ, max_examples=200)
@given(
    event_type=st.sampled_from(EVENT_TYPES),
    path=st.sampled_from(_FREE_TEXT),
    text=st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40),
)
@example(event_type="debt-signal", path="partner_event_id", text="\x00")
@example(event_type="care-indication", path="resident.name", text="\x00")
@example(event_type="debt-signal", path="creditor_name", text="a\x00b")
@example(event_type="wvggz-report", path="address.street", text="\u202estraat\u2028\ufeff")
@example(event_type="streettriage-handover", path="resident.name", text=" \t\u3000")
@example(event_type="debt-signal", path="partner_event_id", text="\U0001f3e0")
def test_any_text_in_a_free_text_field_is_accepted_or_refused_naming_that_field(
    hub: Hub, fuzz: Setup, event_type: str, path: str, text: str
) -> None:
    assume(path != "creditor_name" or event_type == "debt-signal")
    if path == "partner_event_id":  # a new id each time, with the text at both ends
        text = f"{text}-{uuid.uuid4().hex[:8]}-{text}"
    event = _put(valid_event(event_type), path, text)
    answer = send(hub, "free text", fuzz.partners[event_type], event)
    assert answer.status in {202, 422}, answer.text
    if answer.status == 422:
        assert fields_of(answer.payload) == [path], answer.text


#: Bodies that break the JSON parser itself rather than the schema.
_UNPARSABLE = {
    "nested deeper than the parser's stack": b"[" * 20_000 + b"]" * 20_000,
    "an integer of 5,000 digits": b'{"amount_eur": ' + b"9" * 5000 + b"}",
    "an integer of 5,000 digits in a batch": b'[{"amount_eur": ' + b"9" * 5000 + b"}]",
    "no UTF-8": b'{"partner_event_id": "\xff\xfe"}',
    "empty": b"",
}


@pytest.mark.parametrize("batch", [False, True], ids=["event", "batch"])
@pytest.mark.parametrize("body", list(_UNPARSABLE.values()), ids=list(_UNPARSABLE))
def test_a_body_the_json_parser_chokes_on_is_refused_naming_the_body(
    hub: Hub, fuzz: Setup, body: bytes, batch: bool
) -> None:
    partner = fuzz.partners["debt-signal"]
    url = f"{hub.stack.url('ingest')}/v1/events/debt-signal{'/batch' if batch else ''}"
    response = hub.client.post(
        url, content=body, headers={**partner.auth, "Content-Type": "application/json"}
    )
    answer = Answer.of(response)
    LEDGER.answered("unparsable bodies", partner, batch, None, answer)
    assert answer.status == 422, answer.text
    assert fields_of(answer.payload) == ["body"], answer.text


# --- 3. hypothesis: CSV files, broken cell by cell and as a whole --------------------------

#: What a fuzzed cell may hold: any text but a carriage return, which would make the report's
#: line numbers differ from those counted here (the files of raw bytes below have them).
_CELL_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r"), max_size=30)
#: Every field a refusal of a file may name besides its columns.
_FILE_FIELDS = {"file", "header"}


@dataclass(frozen=True)
class CsvFile:
    """A file of valid rows, some changed, and what the report on it must say."""

    content: bytes
    #: Line a row starts on -> its partner_event_id cell as the hub keeps it (None: no cell).
    ids: dict[int, str | None]
    #: Lines of the rows that were changed: no other line may be reported.
    changed: frozenset[int]
    #: The header was broken: the file is refused whole, naming the header.
    header_broken: bool = False


def upload_row(event_type: str, partner_event_id: str) -> list[str]:
    """The cells of a valid event of a fresh household, as its uploader may send it."""
    event = valid_event(event_type)
    event["partner_event_id"] = partner_event_id
    if event_type == "debt-signal":  # a water company: no BSN
        del event["resident"]["bsn"]
        event["creditor_type"] = "WATER"
    model = MODELS[EventType(event_type)].model_validate(event)
    _, line = write_csv(EventType(event_type), [model])
    return next(csv.reader([line], delimiter=";"))


def _written(cells: list[str], delimiter: str, ending: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator=ending).writerow(cells)
    return buffer.getvalue()


@st.composite
def csv_files(draw: st.DrawFn, event_type: str, run: str) -> CsvFile:
    names = [column.name for column in columns(EventType(event_type))]
    required = [c.name for c in columns(EventType(event_type)) if c.required]
    order = draw(st.permutations(range(len(names))), label="column order")
    header = [names[k] for k in order]
    rows = []
    for i in range(draw(st.integers(1, 5), label="rows")):
        cells = upload_row(event_type, f"{run}-{i}")
        rows.append([cells[k] for k in order])
    changed = set()
    for r, row in enumerate(rows):
        for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]), label="changes")):
            how = draw(st.sampled_from(["text", "text", "empty", "drop", "extra"]), label="how")
            at = draw(st.integers(0, len(row) - 1), label="cell")
            if how == "text":
                row[at] = draw(_CELL_TEXT, label="text")
            elif how == "empty":
                row[at] = ""
            elif how == "drop":
                del row[at]
            else:
                row.insert(at, draw(_CELL_TEXT, label="extra cell"))
            changed.add(r)
    broken = draw(st.sampled_from([None] * 6 + ["unknown", "missing", "twice"]), label="header")
    if broken is not None:
        at = draw(st.integers(0, len(header) - 1), label="column")
        if broken == "unknown":
            header[at] = "kolom_" + draw(st.text(string.ascii_lowercase, max_size=6))
        elif broken == "missing":
            at = header.index(draw(st.sampled_from(required), label="required column"))
            del header[at]
            for row in rows:
                del row[min(at, len(row) - 1)]
        else:
            header.append(header[at])
    delimiter = draw(st.sampled_from([";", ","]), label="delimiter")
    ending = draw(st.sampled_from(["\n", "\r\n"]), label="line end")
    text = "\ufeff" if draw(st.booleans(), label="BOM") else ""
    text += _written(header, delimiter, ending)
    line, ids, lines = text.count("\n") + 1, {}, set()
    column = header.index("partner_event_id") if "partner_event_id" in header else None
    for r, row in enumerate(rows):
        written = _written(row, delimiter, ending)
        kept = row[column] if column is not None and column < len(row) else None
        ids[line] = None if kept is None else _AS_KEPT.validate_python(kept)
        if r in changed:
            lines.add(line)
        text += written
        line += written.count("\n")
    return CsvFile(text.encode(), ids, frozenset(lines), header_broken=broken is not None)


def upload(hub: Hub, test: str, partner: Partner, content: bytes) -> tuple[Answer, Any]:
    """Uploads a file as `partner`: the answer, checked as every answer is, and the report
    once the file was read (None when it was refused)."""
    answer = Answer.of(hub.upload(partner.event_type, content, partner.key))
    LEDGER.statuses.setdefault(test, Counter())[answer.status] += 1
    assert answer.status < 500, answer.text
    if answer.status != 202:
        assert answer.status == 422, answer.text
        assert set(fields_of(answer.payload)) <= _FILE_FIELDS, answer.text
        return answer, None
    report = hub.finished_upload(answer.payload["upload_id"], partner.key)
    rows = report["rows"]
    assert rows["read"] == rows["accepted"] + rows["duplicate"] + rows["rejected"], report
    names = {column.name for column in columns(EventType(partner.event_type))}
    for problem in report["problems"]:
        named = problem["field"]
        assert named in names | _FILE_FIELDS | {"row"} or names_a_field(
            partner.event_type, named, {}
        ), f"line {problem['line']} refused naming {named!r}, no column of the file"
        assert isinstance(problem["message"], str) and problem["message"].strip(), problem
    dutch_birth_date = dt.date.fromisoformat(CANARY_BIRTH_DATE).strftime("%d-%m-%Y")
    for value in (CANARY_NAME, CANARY_BIRTH_DATE, dutch_birth_date, CANARY_PHONE, "Teststraat"):
        assert value not in json.dumps(report), value
    LEDGER.new[(partner.event_type, partner.partner_type, "upload")] += rows["accepted"]
    return answer, report


@pytest.mark.parametrize("event_type", EVENT_TYPES)
@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_a_file_with_broken_cells_is_reported_for_those_lines_only(
    hub: Hub, fuzz: Setup, event_type: str, data: st.DataObject
) -> None:
    partner = fuzz.uploaders[event_type]
    sent = data.draw(csv_files(event_type, f"csv{uuid.uuid4().hex[:10]}"), label="file")
    answer, report = upload(hub, "broken files", partner, sent.content)
    if sent.header_broken:
        assert answer.status == 422 and set(fields_of(answer.payload)) == {"header"}
        return
    assert report is not None, answer.text
    assert report["status"] == "done", report
    refused = {problem["line"] for problem in report["problems"]}
    # A row that was not changed is never refused; each refused row is counted once.
    assert refused <= sent.changed, report["problems"]
    assert report["rows"] == {
        "read": len(sent.ids),
        "accepted": len(sent.ids) - len(refused),
        "duplicate": 0,
        "rejected": len(refused),
    }, report
    taken = LEDGER.uploaded.setdefault(partner.partner_id, set())
    for line, partner_event_id in sent.ids.items():
        if line not in refused:
            assert partner_event_id is not None
            taken.add(partner_event_id)


#: Text that starts like a file of each type: the header, then whatever bytes follow.
_HEADERS = {
    t: _written([c.name for c in columns(EventType(t))], ";", "\n").encode() for t in EVENT_TYPES
}


@settings(FUZZ, max_examples=100)
@given(
    event_type=st.sampled_from(EVENT_TYPES),
    with_header=st.booleans(),
    body=st.binary(max_size=600),
)
@example(event_type="debt-signal", with_header=False, body=b"")
@example(event_type="debt-signal", with_header=False, body=b"\xef\xbb\xbf")
@example(event_type="wvggz-report", with_header=True, body=b"\xff\xfe;\x00;\r;\r\n\x00")
@example(event_type="care-indication", with_header=True, body=b'"' + b";" * 300)
@example(event_type="streettriage-handover", with_header=False, body=b"a\rb\rc")
def test_a_file_of_any_bytes_gets_no_5xx_and_publishes_nothing(
    hub: Hub, fuzz: Setup, event_type: str, with_header: bool, body: bytes
) -> None:
    content = (_HEADERS[event_type] if with_header else b"") + body
    _, report = upload(hub, "files of any bytes", fuzz.uploaders[event_type], content)
    if report is not None:
        assert report["status"] in {"done", "failed"}, report
        assert report["rows"]["accepted"] == 0, report


# --- 4. nothing is published that was not answered as accepted ----------------------------


def test_the_topics_hold_exactly_what_was_answered_as_accepted(hub: Hub, fuzz: Setup) -> None:
    """Runs after the tests above (file order): their partners exist for this file only."""
    print("\nanswers per test:", {t: dict(s) for t, s in LEDGER.statuses.items()})
    for partner in fuzz.partners.values():
        accepted = LEDGER.accepted.get(partner.partner_id, {})
        for event_type in EVENT_TYPES:
            records = published(hub, event_type, partner.partner_id)
            if event_type != partner.event_type:
                assert records == [], (partner, event_type)
                continue
            event_ids = [r["event_id"] for r in records]
            assert len(event_ids) == len(set(event_ids)), "an event was published twice"
            assert set(event_ids) == set(accepted), partner
            assert {r["partner_event_id"] for r in records} == {
                _AS_KEPT.validate_python(p) for p in accepted.values()
            }
    for uploader in fuzz.uploaders.values():
        records = published(hub, uploader.event_type, uploader.partner_id)
        event_ids = [r["event_id"] for r in records]
        assert len(event_ids) == len(set(event_ids)), "an uploaded row was published twice"
        assert {r["partner_event_id"] for r in records} == LEDGER.uploaded.get(
            uploader.partner_id, set()
        ), uploader
    after = accepted_counts(hub, fuzz.partners, fuzz.uploaders)
    assert {k: after[k] - before for k, before in fuzz.accepted_before.items()} == {
        k: LEDGER.new[k] for k in fuzz.accepted_before
    }
