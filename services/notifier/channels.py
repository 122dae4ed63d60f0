"""Delivery channels beyond the team inbox: webhooks (CloudEvents 1.0, HMAC-signed, optional
OAuth2 client credentials) and e-mail (SMTP). Each sends one `Notice` and says, by the error
it raises, whether trying again can help.

DeliveryError (services.shared.errors.HubError)
├── TransientDeliveryError   try again later: 5xx, 408, 429, timeouts, refused connections
└── PermanentDeliveryError   trying again cannot help: other 4xx, SMTP 5xx, a bad address

A notice is data-poor on purpose: alert id, version, rule, priority, deadline and a link.
The receiver fetches the details with its own authorisation (docs/notifier.md).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, Protocol

from services.shared.errors import HubError

NoticeKind = Literal["raised", "updated", "overdue"]


@dataclass(frozen=True)
class Notice:
    #: Stable across retries and replays of this notice: the receiver's deduplication key
    #: (the CloudEvents `id`, the `Idempotency-Key` header, the e-mail's Message-ID).
    idempotency_key: str
    kind: NoticeKind
    alert_id: str
    alert_version: int
    rule_id: str
    rule_title: str
    priority: str
    deadline: dt.date
    team_id: str
    team_name: str
    #: The alert's page in the inbox, and its resource in the team API.
    link: str
    api_link: str


class DeliveryError(HubError):
    """A notice did not reach its receiver. `reason` is short and safe to store: an HTTP status,
    an SMTP code or an exception type, never the receiver's answer or personal data."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TransientDeliveryError(DeliveryError):
    """Trying again later may succeed."""


class PermanentDeliveryError(DeliveryError):
    """Trying again cannot help; retrying stops."""


class Channel(Protocol):
    kind: str

    async def send(self, notice: Notice) -> None:
        """Delivers `notice` or raises a DeliveryError."""
        ...
