"""The webhook channel: one notice as a signed CloudEvents 1.0 POST to a case system.

The body is a structured-mode CloudEvent (`application/cloudevents+json`) whose `id` is the
notice's idempotency key. `Hub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` signs
`f"{t}."` + the raw body with the channel's secret; docs/webhooks.md tells the receiver how to
check it. A channel may also carry an OAuth2 client-credentials bearer token (Authlib).

The receiver's answer decides: 2xx delivered; 408, 425, 429 and 5xx, timeouts and transport
errors worth another try (TransientDeliveryError); any other status, redirects included, not
(PermanentDeliveryError). Redirects are not followed: a signed body goes only where it was
configured to go.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

import httpx
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client import OAuthError
from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from services.notifier.channels import Notice, PermanentDeliveryError, TransientDeliveryError

# Authlib 1.9 warns once on import that it runs on httpx rather than its successor httpx2. The
# hub's HTTP client is httpx (pyproject), so the warning says nothing we can act on here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client

__all__ = ["OAuthClientCredentials", "WebhookChannel", "sign"]

SIGNATURE_HEADER = "Hub-Signature"
EVENT_TYPE_PREFIX = "nl.twente-hub.alert."

#: 4xx that say "not now" rather than "not this": Request Timeout, Too Early, Too Many Requests.
_RETRYABLE_4XX = frozenset({408, 425, 429})

#: RFC 6749 §5.2 error codes: fixed words, so safe to store as a reason. Anything else a token
#: endpoint writes in `error` is the receiver's text and stays out of the reason.
_OAUTH_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
    }
)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The `Hub-Signature` value for `body` sent at `timestamp` (unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def event_body(notice: Notice, source: str) -> bytes:
    """The notice as a structured-mode CloudEvents 1.0 JSON document. Data-poor on purpose: the
    receiver fetches the alert itself (`api_link`) with its own authorisation."""
    event = CloudEvent(
        attributes={
            "id": notice.idempotency_key,
            "source": source,
            "type": f"{EVENT_TYPE_PREFIX}{notice.kind}",
            "subject": notice.alert_id,
            "time": dt.datetime.now(dt.UTC),
            "datacontenttype": "application/json",
        },
        data={
            "alert_id": notice.alert_id,
            "alert_version": notice.alert_version,
            "rule_id": notice.rule_id,
            "priority": notice.priority,
            "deadline": notice.deadline.isoformat(),
            "team_id": notice.team_id,
            "link": notice.link,
            "api_link": notice.api_link,
        },
    )
    return to_structured_event(event, JSONFormat()).body


class OAuthClientCredentials:
    """A bearer token from the receiver's token endpoint (OAuth2 client-credentials grant),
    cached by Authlib until it expires. Failures of the token endpoint are DeliveryErrors with
    an `oauth-` reason: `oauth-invalid_client` (permanent), `oauth-http-503`,
    `oauth-ConnectError` (transient)."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str | None = None,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        self.token_url = token_url
        self._client = AsyncOAuth2Client(
            client_id=client_id,
            client_secret=client_secret,
            scope=scope,
            token_endpoint=token_url,
            grant_type="client_credentials",
            timeout=timeout_s,
            follow_redirects=False,
        )
        # Authlib locks its own refresh of an expired token, not the first fetch or a renewal
        # after a 401; this lock keeps concurrent sends to one fetch.
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        """The current access token, fetched when there is none or it is (nearly) expired."""
        async with self._lock:
            with _token_endpoint_errors():
                if self._client.token is None:
                    await self._client.fetch_token()
                else:
                    await self._client.ensure_active_token(self._client.token)
            return self._access_token()

    async def renew(self, refused: str) -> str:
        """A fresh token after the receiver refused `refused` (revoked or forgotten before it
        expired). A send that finds another one already renewed it uses that one."""
        async with self._lock:
            if self._client.token is None or self._access_token() == refused:
                with _token_endpoint_errors():
                    await self._client.fetch_token()
            return self._access_token()

    def _access_token(self) -> str:
        token: Any = self._client.token
        access_token = token.get("access_token") if token is not None else None
        if not isinstance(access_token, str) or not access_token:
            raise TransientDeliveryError("oauth-invalid-response")
        return access_token

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@contextmanager
def _token_endpoint_errors() -> Iterator[None]:
    """Turns what Authlib and httpx raise for a token request into DeliveryErrors."""
    try:
        yield
    except OAuthError as exc:
        # A JSON error answer (400/401): wrong credentials or grant, retrying cannot help.
        error = getattr(exc, "error", None)
        raise PermanentDeliveryError(
            f"oauth-{error}" if error in _OAUTH_ERRORS else "oauth-error"
        ) from exc
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        error_class = TransientDeliveryError if _retryable(status) else PermanentDeliveryError
        raise error_class(f"oauth-http-{status}") from exc
    except httpx.TransportError as exc:
        raise TransientDeliveryError(f"oauth-{type(exc).__name__}") from exc
    except ValueError as exc:
        # A 2xx that is not a JSON object, e.g. a proxy's page in front of the endpoint.
        raise TransientDeliveryError("oauth-invalid-response") from exc


class WebhookChannel:
    """Delivers notices to one case system's webhook endpoint."""

    kind = "webhook"

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        source: str,
        client: httpx.AsyncClient,
        oauth: OAuthClientCredentials | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self._secret = secret
        self._source = source
        self._client = client
        self._oauth = oauth
        self._timeout_s = timeout_s

    async def send(self, notice: Notice) -> None:
        body = event_body(notice, self._source)
        token = await self._oauth.token() if self._oauth is not None else None
        status = await self._post(notice.idempotency_key, body, token)
        if status == 401 and self._oauth is not None and token is not None:
            # The receiver may have revoked our token before it expired: one fresh token, one
            # more try. A second 401 is then about the signature or the client, and final.
            token = await self._oauth.renew(token)
            status = await self._post(notice.idempotency_key, body, token)
        if 200 <= status < 300:
            return
        error_class = TransientDeliveryError if _retryable(status) else PermanentDeliveryError
        raise error_class(f"http-{status}")

    async def _post(self, idempotency_key: str, body: bytes, token: str | None) -> int:
        headers = {
            "Content-Type": JSONFormat.CONTENT_TYPE,
            "Idempotency-Key": idempotency_key,
            # Signed at each try, so a slow retry is not refused for an old timestamp.
            SIGNATURE_HEADER: sign(self._secret, int(time.time()), body),
        }
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self._client.post(
                self.url,
                content=body,
                headers=headers,
                timeout=self._timeout_s,
                follow_redirects=False,
            )
        except httpx.TransportError as exc:
            # Timeouts are transport errors too; the class name (ConnectError, ReadTimeout)
            # is the storable reason.
            raise TransientDeliveryError(type(exc).__name__) from exc
        return response.status_code


def _retryable(status: int) -> bool:
    return status >= 500 or status in _RETRYABLE_4XX
