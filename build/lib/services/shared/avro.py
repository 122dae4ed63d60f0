"""Avro contracts from `schemas/`, encoded as Avro single-object encoding (C3 01 + CRC-64-AVRO).

Every `.avsc` file in the schemas directory is loaded; the fingerprint in a message's header
tells the decoder which writer schema to use, so old versions stay readable when a schema
evolves. Encoding always uses the newest version of a schema name.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.types import Schema

from services.shared.errors import DecodeError

MAGIC = b"\xc3\x01"
_HEADER_LEN = 10
_FILE_NAME = re.compile(r"^(?P<stem>[a-z0-9-]+)\.v(?P<version>\d+)\.avsc$")


@dataclass(frozen=True)
class SchemaVersion:
    """One `.avsc` file: a schema name at one version."""

    name: str
    version: int
    path: Path
    parsed: Schema
    fingerprint: bytes

    @property
    def fields(self) -> list[dict[str, Any]]:
        return list(json.loads(self.path.read_text())["fields"])


def load_schema_file(path: Path) -> SchemaVersion:
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise ValueError(f"schema file {path.name!r} is not named <name>.v<N>.avsc")
    raw = json.loads(path.read_text())
    parsed = parse_schema(raw, _write_hint=False)
    canonical = to_parsing_canonical_form(raw)
    # fastavro gives the fingerprint's bytes in little-endian order, as the header wants them.
    digest = bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    name = f"{raw['namespace']}.{raw['name']}"
    return SchemaVersion(name, int(match["version"]), path, parsed, digest)


class AvroCodec:
    """Encodes and decodes the hub's events with the schemas found in one directory."""

    def __init__(self, schemas_dir: Path) -> None:
        versions = [load_schema_file(p) for p in sorted(schemas_dir.glob("*.avsc"))]
        if not versions:
            raise ValueError(f"no .avsc files in {schemas_dir}")
        self._by_fingerprint: dict[bytes, SchemaVersion] = {v.fingerprint: v for v in versions}
        self._latest: dict[str, SchemaVersion] = {}
        for v in sorted(versions, key=lambda v: v.version):
            self._latest[v.name] = v

    def latest(self, name: str) -> SchemaVersion:
        return self._latest[name]

    def versions(self) -> list[SchemaVersion]:
        return sorted(self._by_fingerprint.values(), key=lambda v: (v.name, v.version))

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        schema = self._latest[name]
        buffer = io.BytesIO()
        buffer.write(MAGIC)
        buffer.write(schema.fingerprint)
        schemaless_writer(buffer, schema.parsed, dict(record), strict_allow_default=True)
        return buffer.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Returns the schema name and the record, read with the newest schema of that name."""
        if len(data) < _HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("not Avro single-object encoding (missing C3 01 header)")
        writer = self._by_fingerprint.get(data[2:_HEADER_LEN])
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {data[2:_HEADER_LEN].hex()}")
        reader = self._latest[writer.name]
        try:
            record = schemaless_reader(io.BytesIO(data[_HEADER_LEN:]), writer.parsed, reader.parsed)
        except Exception as exc:  # fastavro raises several unrelated types on corrupt data
            raise DecodeError(
                f"corrupt {writer.name} v{writer.version} body: {type(exc).__name__}"
            ) from exc
        if not isinstance(record, dict):
            raise DecodeError(f"{writer.name} did not decode to a record")
        return writer.name, record
