"""Peers on loopback for `hub demo` and the delivery tests: a case system's webhook endpoint
with its OAuth2 token endpoint (uvicorn in a thread), and an SMTP server (aiosmtpd).

The receiver checks `Hub-Signature` exactly as docs/webhooks.md tells a case system to, written
here on its own (it does not import the sender's `sign`), so a passing test shows that the
documented recipe accepts what the hub sends.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Self
from urllib.parse import unquote_plus

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

#: How far a signature's timestamp may be from the receiver's clock (docs/webhooks.md).
SIGNATURE_TOLERANCE_S = 300
START_TIMEOUT_S = 30.0
_HUB_HEADERS = ("authorization", "content-type", "hub-signature", "idempotency-key")


def _loopback_socket() -> socket.socket:
    """A listening socket on a free loopback port, bound before the server runs so the port is
    known at once and no other process can take it in between."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def verify_signature(secret: bytes, header: str | None, body: bytes, now: float) -> bool:
    """The recipe of docs/webhooks.md: parse `t=` and `v1=`, refuse a timestamp more than five
    minutes off, recompute HMAC-SHA256 over `t.` + the raw body, compare in constant time."""
    if not header:
        return False
    parts: dict[str, str] = {}
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(name, value)
    timestamp, signature = parts.get("t", ""), parts.get("v1", "")
    if not timestamp.isdigit() or not signature:
        return False
    if abs(now - int(timestamp)) > SIGNATURE_TOLERANCE_S:
        return False
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class _Server(uvicorn.Server):
    """uvicorn that says, through a threading.Event, when it is accepting connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.serving = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.serving.set()


class WebhookReceiver:
    """A case system's webhook endpoint (and OAuth2 token endpoint) on loopback, run by uvicorn
    in a thread.

    Per webhook POST, in this order: the signature (401, counted in `bad_signatures`); with
    `oauth_client`, a bearer token this receiver issued (401); `fail_first` / `always_fail`
    (`fail_status`); with `hold_first`, the first request that gets this far is accepted, sets
    `first_request` and waits for `release()` before answering 200; with `hold_all`, every
    request that gets this far does (so a sender's retries after its timeout are held too);
    otherwise accepted once per idempotency key (a repeat lands in `duplicates`) and answered
    200.
    """

    def __init__(
        self,
        secret: bytes,
        *,
        fail_first: int = 0,
        always_fail: bool = False,
        fail_status: int = 503,
        oauth_client: tuple[str, str] | None = None,
        hold_first: bool = False,
        hold_all: bool = False,
    ) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.always_fail = always_fail
        self.fail_status = fail_status
        self.oauth_client = oauth_client
        self.hold_first = hold_first
        self.hold_all = hold_all
        self.url = ""
        self.token_url = ""
        self.requests = 0
        self.accepted: list[dict[str, Any]] = []
        self.duplicates: list[str] = []
        self.bad_signatures = 0
        #: Requests refused for a missing or unknown bearer token (with `oauth_client`).
        self.bad_tokens = 0
        #: Access tokens the token endpoint handed out.
        self.tokens_issued = 0
        #: The hub's headers and the raw body of each webhook POST, in order of arrival.
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        #: Set when the first webhook request arrives; with `hold_first` or `hold_all`, once that
        #: request is accepted and held, so a test may stop the sender knowing the receiver has it.
        self.first_request = threading.Event()
        self._release = threading.Event()
        self._held = False
        self._failed = 0
        self._tokens: set[str] = set()
        self._condition = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- the peer's lifetime ------------------------------------------------------------------

    def __enter__(self) -> Self:
        sock = _loopback_socket()
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hooks/alerts"
        self.token_url = f"http://127.0.0.1:{port}/oauth/token"
        app = Starlette(
            routes=[
                Route("/hooks/alerts", self._webhook, methods=["POST"]),
                Route("/oauth/token", self._token, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False, log_config=None
        )
        self._server = _Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="webhook-receiver"
        )
        self._thread.start()
        if not self._server.serving.wait(START_TIMEOUT_S):
            self._stop()
            raise AssertionError(f"the webhook receiver did not start in {START_TIMEOUT_S} s")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        # A held request would keep uvicorn's graceful shutdown waiting.
        self._release.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    # -- what tests read -----------------------------------------------------------------------

    def release(self) -> None:
        """Lets a held first request answer."""
        self._release.set()

    def revoke_tokens(self) -> None:
        """Forgets every issued token, as a case system might before they expire."""
        with self._condition:
            self._tokens.clear()

    def accepted_keys(self) -> list[str]:
        with self._condition:
            return [str(event["id"]) for event in self.accepted]

    def wait_accepted(self, n: int, timeout: float = 60) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.accepted) >= n, timeout):
                raise AssertionError(
                    f"the webhook receiver accepted {len(self.accepted)} CloudEvents in "
                    f"{timeout} s, expected {n} (requests {self.requests}, bad signatures "
                    f"{self.bad_signatures}, bad tokens {self.bad_tokens}, "
                    f"duplicates {len(self.duplicates)})"
                )

    # -- the endpoints -------------------------------------------------------------------------

    async def _webhook(self, request: Request) -> Response:
        body = await request.body()
        key = request.headers.get("idempotency-key", "")
        with self._condition:
            self.requests += 1
            self.headers.append(
                {name: request.headers[name] for name in _HUB_HEADERS if name in request.headers}
            )
            self.bodies.append(body)
            if not (self.hold_first or self.hold_all):
                self.first_request.set()
            if not verify_signature(
                self.secret, request.headers.get("hub-signature"), body, time.time()
            ):
                self.bad_signatures += 1
                self._condition.notify_all()
                return Response(status_code=401)
            if self.oauth_client is not None and not self._known_token(request):
                self.bad_tokens += 1
                self._condition.notify_all()
                return Response(status_code=401)
            if self.always_fail or self._failed < self.fail_first:
                self._failed += 1
                return Response(status_code=self.fail_status)
            self._accept(key, body)
            hold = self.hold_all or (self.hold_first and not self._held)
            if hold:
                self._held = True
                self.first_request.set()
        if hold:
            # Off the event loop, so the receiver keeps serving while this answer waits.
            await asyncio.to_thread(self._release.wait)
        return Response(status_code=200)

    def _known_token(self, request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token in self._tokens

    def _accept(self, key: str, body: bytes) -> None:
        """Records a valid CloudEvent once per idempotency key; the caller holds the lock."""
        if key in {event.get("id") for event in self.accepted}:
            self.duplicates.append(key)
        else:
            self.accepted.append(json.loads(body))
        self._condition.notify_all()

    async def _token(self, request: Request) -> Response:
        form = await request.form()
        client_id, client_secret = _basic_credentials(request.headers.get("authorization"))
        if client_id is None:
            client_id = str(form.get("client_id", ""))
            client_secret = str(form.get("client_secret", ""))
        if self.oauth_client is None or (client_id, client_secret) != self.oauth_client:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        token = secrets.token_urlsafe(24)
        with self._condition:
            self._tokens.add(token)
            self.tokens_issued += 1
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": 3600},
            headers={"Cache-Control": "no-store"},
        )


def _basic_credentials(header: str | None) -> tuple[str | None, str | None]:
    """Client id and secret from HTTP Basic, each form-urlencoded first (RFC 6749 §2.3.1)."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
    return unquote_plus(client_id), unquote_plus(client_secret)


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self._sink.refuse_code is not None:
            return f"{self._sink.refuse_code} Refused by the test sink"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self._sink.receive(message)
        return "250 Message accepted for delivery"


class _LoopbackController(Controller):
    """aiosmtpd's Controller, serving on a socket bound beforehand to a free port."""

    def __init__(self, handler: _SinkHandler, sock: socket.socket) -> None:
        host, port = sock.getsockname()
        super().__init__(handler, hostname=host, port=port)
        self._sock = sock

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class SmtpSink:
    """An SMTP server on loopback (aiosmtpd Controller)."""

    def __init__(self, *, refuse_code: int | None = None) -> None:
        self.refuse_code = refuse_code
        self.host = "127.0.0.1"
        self.port = 0
        self.messages: list[EmailMessage] = []
        self._condition = threading.Condition()
        self._controller: _LoopbackController | None = None

    def __enter__(self) -> Self:
        sock = _loopback_socket()
        self.host, self.port = sock.getsockname()
        self._controller = _LoopbackController(_SinkHandler(self), sock)
        self._controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def receive(self, message: EmailMessage) -> None:
        with self._condition:
            self.messages.append(message)
            self._condition.notify_all()

    def wait_messages(self, n: int, timeout: float = 30) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.messages) >= n, timeout):
                raise AssertionError(
                    f"the SMTP sink received {len(self.messages)} messages in {timeout} s, "
                    f"expected {n}"
                )
