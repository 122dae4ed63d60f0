"""The project's error tree. Errors carry context (topic, field, event id), never personal data.

HubError
├── ConfigurationError      settings that cannot work (refused at start-up)
├── ValidationFailed        partner input that breaks the contract; lists field paths
├── CsvRefused              an uploaded CSV file that cannot be read at all; lists its faults
├── DecodeError             bytes on a topic that are not a known Avro event
├── DecryptionFailed        a ciphertext that does not open (wrong or destroyed key)
└── InfrastructureError     Kafka or PostgreSQL cannot be reached or started
"""

from __future__ import annotations

from dataclasses import dataclass


class HubError(Exception):
    """Root of every error the hub raises on purpose."""


class ConfigurationError(HubError):
    """Settings that cannot work; raised at start-up."""


@dataclass(frozen=True)
class FieldError:
    """One problem with one field of partner input."""

    path: str
    message: str


class ValidationFailed(HubError):
    """Partner input that breaks the contract."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))


@dataclass(frozen=True)
class CsvProblem:
    """One fault in an uploaded CSV file: a column name, or "header", "row" or "file"."""

    field: str
    message: str  # never holds a cell's value: cells are personal data


class CsvRefused(HubError):
    """An uploaded CSV file that cannot be read at all (its header, encoding or delimiter)."""

    def __init__(self, problems: list[CsvProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


class DecodeError(HubError):
    """Bytes that are not a known Avro single-object encoded event."""


class DecryptionFailed(HubError):
    """A ciphertext that does not open: wrong key, destroyed key or tampered bytes."""


class InfrastructureError(HubError):
    """Kafka or PostgreSQL cannot be reached or started."""
