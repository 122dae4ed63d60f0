"""The project's error tree. Errors carry context (topic, field, event id), never personal data.

HubError
├── ConfigurationError      settings that cannot work (refused at start-up)
├── ValidationFailed        partner input that breaks the contract; lists field paths
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


class DecodeError(HubError):
    """Bytes that are not a known Avro single-object encoded event."""


class DecryptionFailed(HubError):
    """A ciphertext that does not open: wrong key, destroyed key or tampered bytes."""


class InfrastructureError(HubError):
    """Kafka or PostgreSQL cannot be reached or started."""
