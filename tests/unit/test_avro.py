"""The Avro codec: single-object encoding, and the contract between HTTP models and schemas."""

from __future__ import annotations

import datetime as dt
import io
import typing
from enum import Enum
from types import NoneType, UnionType

import fastavro
import pytest
from pydantic import BaseModel

from services.ingest.models import IDENTITY_FIELDS, MODELS
from services.shared.avro import MAGIC, AvroCodec
from services.shared.config import DEFAULT_SCHEMAS_DIR
from services.shared.errors import DecodeError
from services.shared.events import ALERT_SCHEMA_NAME, FAMILIES, HUB_ASSIGNED_FIELDS

CODEC = AvroCodec(DEFAULT_SCHEMAS_DIR)


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


def test_no_identity_field_exists_in_any_schema() -> None:
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


def test_every_newer_schema_version_reads_what_older_versions_wrote() -> None:
    """Backward compatibility: a field a version adds has a default, none changes type."""
    by_name: dict[str, list[typing.Any]] = {}
    for version in CODEC.versions():
        by_name.setdefault(version.name, []).append(version)
    for versions in by_name.values():
        newest = versions[-1]
        for older in versions[:-1]:
            old_fields = {f["name"]: f for f in older.fields}
            for field in newest.fields:
                if field["name"] in old_fields:
                    assert field["type"] == old_fields[field["name"]]["type"], field["name"]
                else:
                    assert "default" in field, f"{newest.name} v{newest.version}: {field['name']}"


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
