"""The correlation id and acceptance time that follow an event from ingest to its delivery.

Ingest puts two Kafka headers on every source-topic record; the matcher copies those of the
event that produced an alert version onto the alert record; the notifier stores them with the
alert. Both values are UTF-8:

- `hub-correlation-id`: the partner's `X-Correlation-Id` when it is a UUID (8-4-4-4-12 hex
  digits or 32 of them, any case; kept in lower case), else a new uuid4 hex. Only a UUID,
  because the id is bound to every log line, put on topics, stored with alerts and answered
  back: free text could be a BSN, a name with a birth date or an e-mail address;
- `hub-accepted-at`: when ingest accepted the event, Unix seconds as a decimal string.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CORRELATION_HEADER = "hub-correlation-id"
ACCEPTED_AT_HEADER = "hub-accepted-at"
#: The HTTP header a partner may send and always gets back.
HTTP_HEADER = "X-Correlation-Id"
_HEX = "[0-9a-fA-F]"
_VALID = re.compile(rf"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}|{_HEX}{{32}}")

Headers = Mapping[str, bytes] | Iterable[tuple[str, bytes]]


def valid_correlation_id(value: str | bytes | None) -> str | None:
    """`value` as a correlation id (a UUID, in lower case), or None when it is missing or
    anything else."""
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if value is None or not _VALID.fullmatch(value):
        return None
    return value.lower()


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def correlation_id_or_new(value: str | bytes | None) -> str:
    return valid_correlation_id(value) or new_correlation_id()


@dataclass(frozen=True)
class Trace:
    """What the headers of one record say; either part may be missing (older records)."""

    correlation_id: str | None = None
    #: Unix seconds.
    accepted_at: float | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        found = []
        if self.correlation_id is not None:
            found.append((CORRELATION_HEADER, self.correlation_id.encode()))
        if self.accepted_at is not None:
            found.append((ACCEPTED_AT_HEADER, f"{self.accepted_at:.6f}".encode()))
        return found

    def seconds_since_accepted(self, now: float | None = None) -> float | None:
        if self.accepted_at is None:
            return None
        return max(0.0, (time.time() if now is None else now) - self.accepted_at)


#: The trace of a record without one.
NO_TRACE = Trace()


def read_trace(headers: Headers | None) -> Trace:
    """The trace in a record's headers; invalid values are left out, not trusted."""
    if headers is None:
        return NO_TRACE
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found = {k: v for k, v in pairs if k in (CORRELATION_HEADER, ACCEPTED_AT_HEADER)}
    accepted_at: float | None = None
    raw = found.get(ACCEPTED_AT_HEADER)
    if raw is not None:
        try:
            accepted_at = float(raw.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            accepted_at = None
        if accepted_at is not None and not 0 < accepted_at < 1e11:  # NaN, inf, nonsense
            accepted_at = None
    return Trace(valid_correlation_id(found.get(CORRELATION_HEADER)), accepted_at)
