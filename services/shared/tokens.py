"""Looks up who holds a bearer token: partners (ingest) and team members (notifier)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Generic, TypeVar

from pydantic import SecretStr

T = TypeVar("T")


class TokenIndex(Generic[T]):
    """Tokens are kept and compared as SHA-256 digests, in constant time."""

    def __init__(self, holders: Iterable[tuple[SecretStr, T]]) -> None:
        self._by_digest = {_digest(token.get_secret_value()): holder for token, holder in holders}

    def find(self, token: str) -> T | None:
        digest = _digest(token)
        for known, holder in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return holder
        return None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
