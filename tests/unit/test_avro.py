"""The Avro codec: single-object encoding, the contract between HTTP models and schemas, and
schema evolution (every version reads what every earlier version wrote)."""

from __future__ import annotations

import datetime as dt
import io
import typing
from enum import Enum
from pathlib import Path
from types import NoneType, UnionType

import fastavro
import pytest
from fastavro.utils import generate_many
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from services.ingest.models import IDENTITY_FIELDS, MODELS, DebtSignalIn
from services.shared.avro import MAGIC, AvroCodec, SchemaVersion, load_schema_file
from services.shared.config import DEFAULT_SCHEMAS_DIR
from services.shared.errors import DecodeError
from services.shared.events import ALERT_SCHEMA_NAME, FAMILIES, HUB_ASSIGNED_FIELDS, EventType

CODEC = AvroCodec(DEFAULT_SCHEMAS_DIR)
INTAKE_CODEC = AvroCodec(DEFAULT_SCHEMAS_DIR / "intake")

DEBT_SIGNAL = FAMILIES[EventType.DEBT_SIGNAL].schema_name
INTAKE_SCHEMA_NAMES = {
    EventType.DEBT_SIGNAL: "nl.twente.hub.intake.DebtSignalIntake",
    EventType.WVGGZ_REPORT: "nl.twente.hub.intake.WvggzReportIntake",
    EventType.STREETTRIAGE_HANDOVER: "nl.twente.hub.intake.StreettriageHandoverIntake",
    EventType.CARE_INDICATION: "nl.twente.hub.intake.CareIndicationIntake",
}


def _wvggz_record() -> dict[str, typing.Any]:
    return {
        "event_id": "e1",
        "partner_id": "ggd",
        "partner_type": "GGD_MELDFUNCTIE",
        "partner_event_id": "p1",
        "household_id": "hh1-abc",
        "pseudonym_version": 1,
        "person_id": None,
        "received_at": dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC),
        "municipality_code": "GM0153",
        "wijk_code": "WK015301",
        "report_date": dt.date(2025, 3, 1),
        "reporter_category": "NEIGHBOUR",
    }


def test_single_object_encoding_has_header_and_round_trips() -> None:
    data = CODEC.encode("nl.twente.hub.events.WvggzReport", _wvggz_record())
    schema = CODEC.latest("nl.twente.hub.events.WvggzReport")
    assert data[:2] == MAGIC
    assert data[2:10] == schema.fingerprint
    name, record = CODEC.decode(data)
    assert name == "nl.twente.hub.events.WvggzReport"
    assert record == _wvggz_record()


def test_fingerprint_matches_the_avro_specification() -> None:
    # The Avro spec's CRC-64-AVRO of the schema "int" is 0x7275d51a3f395c8f; the header
    # carries it little-endian.
    from fastavro.schema import fingerprint

    assert bytes.fromhex(fingerprint('"int"', "CRC-64-AVRO")) == bytes.fromhex("8f5c393f1ad57572")


@pytest.mark.parametrize("data", [b"", b"{}", b"\xc3\x01" + b"\x00" * 8 + b"x", b"\xc3\x01"])
def test_decode_refuses_what_is_not_a_hub_event(data: bytes) -> None:
    with pytest.raises(DecodeError):
        CODEC.decode(data)


def test_decode_refuses_a_truncated_body() -> None:
    data = CODEC.encode("nl.twente.hub.events.WvggzReport", _wvggz_record())
    with pytest.raises(DecodeError, match="corrupt"):
        CODEC.decode(data[:20])


def _avro_kind(avro_type: typing.Any) -> tuple[str, bool]:
    """(kind, nullable) of an Avro field type, in the terms the pydantic side is mapped to."""
    nullable = False
    if isinstance(avro_type, list):
        nullable = "null" in avro_type
        (avro_type,) = [t for t in avro_type if t != "null"]
    if isinstance(avro_type, dict):
        if avro_type.get("logicalType") == "date":
            return "date", nullable
        if avro_type["type"] == "enum":
            return "enum:" + ",".join(avro_type["symbols"]), nullable
        if avro_type["type"] == "array":
            inner, _ = _avro_kind(avro_type["items"])
            return f"array:{inner}", nullable
    return {"string": "string", "int": "int", "boolean": "boolean"}[avro_type], nullable


def _python_kind(annotation: typing.Any) -> tuple[str, bool]:
    nullable = False
    if isinstance(annotation, UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not NoneType]
        nullable = len(args) < len(typing.get_args(annotation))
        (annotation,) = args
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is list:
        inner, _ = _python_kind(typing.get_args(annotation)[0])
        return f"array:{inner}", nullable
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "enum:" + ",".join(m.value for m in annotation), nullable
    simple = {str: "string", int: "int", bool: "boolean", dt.date: "date"}
    return simple[annotation], nullable


@pytest.mark.parametrize("event_type", list(MODELS))
def test_http_model_and_avro_schema_agree_field_by_field(event_type: typing.Any) -> None:
    model: type[BaseModel] = MODELS[event_type]
    schema = CODEC.latest(FAMILIES[event_type].schema_name)
    avro = {f["name"]: f for f in schema.fields if f["name"] not in HUB_ASSIGNED_FIELDS}
    http = {n: f for n, f in model.model_fields.items() if n not in IDENTITY_FIELDS}
    assert set(http) == set(avro)
    for name, field in http.items():
        assert _python_kind(field.annotation) == _avro_kind(avro[name]["type"]), name


def _assert_model_agrees_with_record(
    model: type[BaseModel], fields: list[dict[str, typing.Any]], where: str
) -> None:
    """Same names in the same order, same kinds, same nullability, same defaults; nested
    models against nested records."""
    assert list(model.model_fields) == [f["name"] for f in fields], where
    avro = {f["name"]: f for f in fields}
    for name, field in model.model_fields.items():
        path, avro_type = f"{where}.{name}", avro[name]["type"]
        if isinstance(avro_type, dict) and avro_type["type"] == "record":
            nested = field.annotation
            assert isinstance(nested, type) and issubclass(nested, BaseModel), path
            _assert_model_agrees_with_record(nested, avro_type["fields"], path)
        else:
            assert _python_kind(field.annotation) == _avro_kind(avro_type), path
        _assert_same_default(field, avro[name], path)


def _assert_same_default(field: FieldInfo, avro_field: dict[str, typing.Any], path: str) -> None:
    if field.is_required():
        assert "default" not in avro_field, f"{path} is required over HTTP"
    else:
        assert "default" in avro_field, f"{path} may be left out over HTTP"
        assert field.get_default(call_default_factory=True) == avro_field["default"], path


@pytest.mark.parametrize("event_type", list(MODELS))
def test_http_model_and_intake_schema_agree_field_by_field(event_type: EventType) -> None:
    """A trusted producer writing the newest intake schema sends exactly what the HTTP API takes."""
    schema = INTAKE_CODEC.latest(INTAKE_SCHEMA_NAMES[event_type])
    _assert_model_agrees_with_record(MODELS[event_type], schema.fields, schema.name)


def _enums(avro_type: typing.Any) -> dict[str, list[str]]:
    if isinstance(avro_type, list):
        return {k: v for t in avro_type for k, v in _enums(t).items()}
    if not isinstance(avro_type, dict):
        return {}
    if avro_type["type"] == "enum":
        return {avro_type["name"]: avro_type["symbols"]}
    if avro_type["type"] == "array":
        return _enums(avro_type["items"])
    if avro_type["type"] == "record":
        return _enums([f["type"] for f in avro_type["fields"]])
    return {}


@pytest.mark.parametrize("event_type", list(MODELS))
def test_intake_schema_uses_the_source_schemas_enums(event_type: EventType) -> None:
    intake = INTAKE_CODEC.latest(INTAKE_SCHEMA_NAMES[event_type])
    source = CODEC.latest(FAMILIES[event_type].schema_name)
    assert _enums([f["type"] for f in intake.fields]) == _enums([f["type"] for f in source.fields])


def test_no_identity_field_exists_in_any_schema() -> None:
    """The identity-free contracts: the `.avsc` files directly in `schemas/`.

    `schemas/intake/` is the one place identity is allowed (trusted producers write it in
    clear to the intake topics); the main codec does not look into subdirectories, so it
    never loads those schemas, and this test fails if it ever did.
    """
    forbidden = {
        "bsn",
        "name",
        "birth_date",
        "street",
        "postcode",
        "house_number",
        "city",
        "resident",
        "address",
        "reporter_name",
    }
    for version in CODEC.versions():
        assert forbidden.isdisjoint(f["name"] for f in version.fields), version.name


def _evolution_pairs() -> list[tuple[SchemaVersion, SchemaVersion]]:
    """(older, newer) for every two versions of a schema name, in every directory of `schemas/`."""
    by_name: dict[tuple[Path, str], list[SchemaVersion]] = {}
    for path in sorted(DEFAULT_SCHEMAS_DIR.rglob("*.avsc")):
        version = load_schema_file(path)
        by_name.setdefault((path.parent, version.name), []).append(version)
    pairs = []
    for versions in by_name.values():
        versions.sort(key=lambda v: v.version)
        assert len({v.version for v in versions}) == len(versions), versions[0].name
        pairs += [(old, new) for i, new in enumerate(versions) for old in versions[:i]]
    return pairs


def _pair_id(pair: tuple[SchemaVersion, SchemaVersion]) -> str:
    old, new = pair
    return f"{old.path.relative_to(DEFAULT_SCHEMAS_DIR)}->v{new.version}"


def _without_docs(avro_type: typing.Any) -> typing.Any:
    if isinstance(avro_type, dict):
        return {k: _without_docs(v) for k, v in avro_type.items() if k != "doc"}
    if isinstance(avro_type, list):
        return [_without_docs(t) for t in avro_type]
    return avro_type


def _is_record(avro_type: typing.Any) -> bool:
    return isinstance(avro_type, dict) and avro_type["type"] == "record"


def _assert_reads(
    old_fields: list[dict[str, typing.Any]], new_fields: list[dict[str, typing.Any]], where: str
) -> None:
    """A field the newer version adds has a default; no field changes type. A field the newer
    version drops is fine: the reader skips it."""
    old = {f["name"]: f for f in old_fields}
    for field in new_fields:
        path = f"{where}.{field['name']}"
        if field["name"] not in old:
            assert "default" in field, f"{path} is new and has no default"
            continue
        old_type, new_type = old[field["name"]]["type"], field["type"]
        if _is_record(old_type) and _is_record(new_type):
            _assert_reads(old_type["fields"], new_type["fields"], path)
        else:
            assert _without_docs(new_type) == _without_docs(old_type), f"{path} changed type"


@pytest.mark.parametrize("pair", _evolution_pairs(), ids=_pair_id)
def test_every_schema_version_reads_what_every_earlier_version_wrote(
    pair: tuple[SchemaVersion, SchemaVersion],
) -> None:
    """Backward compatibility, by the schemas' shape and by data: records an older producer
    wrote read with the newer schema, every field there, added ones with their default."""
    old, new = pair
    _assert_reads(old.fields, new.fields, f"{new.name} v{new.version}")
    old_names = {f["name"] for f in old.fields}
    added = {f["name"]: f["default"] for f in new.fields if f["name"] not in old_names}
    for written in generate_many(old.parsed, 50):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, old.parsed, written)
        buffer.seek(0)
        as_written = fastavro.schemaless_reader(buffer, old.parsed, old.parsed)
        buffer.seek(0)
        record = fastavro.schemaless_reader(buffer, old.parsed, new.parsed)
        assert isinstance(record, dict) and isinstance(as_written, dict)
        assert set(record) == {f["name"] for f in new.fields}
        assert {k: record[k] for k in added} == added
        unchanged = {f["name"] for f in new.fields if not _is_record(f["type"])} - set(added)
        assert {k: record[k] for k in unchanged} == {k: as_written[k] for k in unchanged}


def _intake_debt_signal() -> dict[str, typing.Any]:
    """Obviously synthetic identity, valid for the HTTP model."""
    return {
        "partner_event_id": "synthetic-1",
        "resident": {
            "name": "Test Persoon",
            "birth_date": dt.date(1970, 1, 1),
            "bsn": None,
            "phone": None,
        },
        "address": {
            "street": "Teststraat",
            "house_number": 1,
            "house_letter": None,
            "house_number_addition": None,
            "postcode": "9999 XX",
            "city": "Testdorp",
        },
        "municipality_code": "GM0153",
        "wijk_code": None,
        "creditor_type": "HUUR",
        "creditor_name": "Woningcorporatie Voorbeeld",
        "amount_eur": 850,
        "arrear_start_date": dt.date(2025, 1, 15),
        "signal_date": dt.date(2025, 3, 1),
        "crisis": False,
        "crisis_kind": None,
        "warm_handover": False,
    }


def _single_object(version: SchemaVersion, record: dict[str, typing.Any]) -> bytes:
    """What a producer still on `version` writes: the codec's framing, that version's body."""
    buffer = io.BytesIO()
    buffer.write(MAGIC + version.fingerprint)
    fastavro.schemaless_writer(buffer, version.parsed, record)
    return buffer.getvalue()


def _version(codec: AvroCodec, name: str, number: int) -> SchemaVersion:
    return next(v for v in codec.versions() if v.name == name and v.version == number)


def test_debt_signals_from_v1_and_v2_intake_producers_both_validate() -> None:
    name = INTAKE_SCHEMA_NAMES[EventType.DEBT_SIGNAL]
    assert INTAKE_CODEC.latest(name).version == 2
    from_v1 = _single_object(_version(INTAKE_CODEC, name, 1), _intake_debt_signal())
    from_v2 = INTAKE_CODEC.encode(name, {**_intake_debt_signal(), "missed_payments": 3})
    assert from_v1[2:10] != from_v2[2:10]

    decoded_v1 = INTAKE_CODEC.decode(from_v1)
    decoded_v2 = INTAKE_CODEC.decode(from_v2)

    assert decoded_v1[0] == decoded_v2[0] == name
    v1_event = DebtSignalIn.model_validate(decoded_v1[1])
    v2_event = DebtSignalIn.model_validate(decoded_v2[1])
    assert v1_event.missed_payments is None
    assert v2_event.missed_payments == 3
    assert v1_event.address.postcode == v2_event.address.postcode == "9999XX"
    assert v1_event.model_dump(exclude={"missed_payments"}) == v2_event.model_dump(
        exclude={"missed_payments"}
    )


def test_a_debt_signal_written_with_version_1_reads_with_the_newest_schema() -> None:
    assert CODEC.latest(DEBT_SIGNAL).version == 2
    v1 = _version(CODEC, DEBT_SIGNAL, 1)
    written = {
        "event_id": "e1",
        "partner_id": "synthetic-creditor",
        "partner_type": "HUUR",
        "partner_event_id": "p1",
        "household_id": "hh1-abc",
        "pseudonym_version": 1,
        "person_id": None,
        "received_at": dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC),
        "municipality_code": "GM0153",
        "wijk_code": None,
        "creditor_type": "HUUR",
        "creditor_name": "Woningcorporatie Voorbeeld",
        "amount_eur": 850,
        "arrear_start_date": dt.date(2025, 1, 15),
        "signal_date": dt.date(2025, 3, 1),
        "crisis": True,
        "crisis_kind": "EVICTION",
        "warm_handover": False,
    }
    name, record = CODEC.decode(_single_object(v1, written))
    assert name == DEBT_SIGNAL
    assert record == {**written, "missed_payments": None}


def test_an_alert_written_with_version_1_reads_with_the_newest_schema() -> None:
    assert CODEC.latest(ALERT_SCHEMA_NAME).version == 2
    v1 = next(v for v in CODEC.versions() if v.name == ALERT_SCHEMA_NAME and v.version == 1)
    alert = {
        "alert_id": "a1",
        "household_id": "hh1-abc",
        "municipality_code": "GM0153",
        "wijk_code": None,
        "rule_id": "twente-match",
        "rule_version": 1,
        "episode": 1,
        "version": 1,
        "priority": "NORMAL",
        "purpose": "debt-help",
        "legal_basis": "Wgs art. 3 en 4",
        "raised_on": dt.date(2025, 3, 1),
        "deadline": dt.date(2025, 3, 29),
        "deadline_rule": "4 weken",
        "domains": ["debt"],
        "explanation": "2 betalingsachterstanden",
        "undisclosed_domains": "hide",
        "contributions": [],
    }
    buffer = io.BytesIO()
    buffer.write(MAGIC + v1.fingerprint)
    fastavro.schemaless_writer(buffer, v1.parsed, alert)
    name, record = CODEC.decode(buffer.getvalue())
    assert name == ALERT_SCHEMA_NAME
    assert record["condition"] == "" and record["rule_title"] == ""
    assert record["explanation"] == "2 betalingsachterstanden"
