"""Envelope encryption of contact details and notes: a data key per household, master-wrapped.

Destroying a household's wrapped data key makes every copy of its contact details
unreadable (crypto-shredding), in the database and in any backup of it.
"""

from __future__ import annotations

import datetime as dt
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, ValidationError

from services.shared.config import VaultSettings
from services.shared.errors import DecryptionFailed

_NONCE_BYTES = 12


class ContactDetails(BaseModel):
    """What a wijkteam needs for an outreach visit. Only ever stored encrypted."""

    # A validation error must not echo the decrypted values it failed on.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    name: str
    birth_date: dt.date
    phone: str | None = None
    street: str
    house_number: int
    house_letter: str | None = None
    house_number_addition: str | None = None
    postcode: str
    city: str


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], aad)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed("ciphertext does not open with this key") from exc


class Vault:
    """Makes, wraps and uses data keys. The master key never leaves this object."""

    def __init__(self, settings: VaultSettings) -> None:
        self._master = settings.master_key_bytes()
        self.master_key_id = settings.master_key_id

    def new_data_key(self, key_id: str) -> tuple[bytes, bytes]:
        """A fresh data key and its wrapped form; `key_id` binds the wrapping to its row."""
        data_key = AESGCM.generate_key(bit_length=256)
        return data_key, _seal(self._master, data_key, f"data-key:{key_id}".encode())

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        return _open(self._master, wrapped, f"data-key:{key_id}".encode())

    def seal_secrets(self, owner: str, secrets: dict[str, str]) -> bytes:
        """Configuration secrets (a webhook's HMAC key, an OAuth2 client secret) for storage."""
        return _seal(self._master, json.dumps(secrets).encode(), f"secrets:{owner}".encode())

    def open_secrets(self, owner: str, sealed: bytes) -> dict[str, str]:
        opened: dict[str, str] = json.loads(
            _open(self._master, sealed, f"secrets:{owner}".encode())
        )
        return opened

    @staticmethod
    def seal_note(data_key: bytes, alert_id: str, text: str) -> bytes:
        return _seal(data_key, text.encode(), f"note:{alert_id}".encode())

    @staticmethod
    def open_note(data_key: bytes, alert_id: str, sealed: bytes) -> str:
        return _open(data_key, sealed, f"note:{alert_id}".encode()).decode()

    @staticmethod
    def seal_contact(data_key: bytes, event_id: str, details: ContactDetails) -> bytes:
        return _seal(data_key, details.model_dump_json().encode(), f"contact:{event_id}".encode())

    @staticmethod
    def open_contact(data_key: bytes, event_id: str, sealed: bytes) -> ContactDetails:
        plaintext = _open(data_key, sealed, f"contact:{event_id}".encode())
        try:
            return ContactDetails.model_validate(json.loads(plaintext))
        except ValidationError:
            raise DecryptionFailed("contact details do not fit the current model") from None
