"""The webhook and e-mail channels against real loopback peers: a case system's endpoint that
checks signatures the way docs/webhooks.md tells it to, an OAuth2 token endpoint, an SMTP server.

No Kafka or PostgreSQL: the peers start in a thread each, per test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import re
import socket
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http
from cloudevents.core.formats.json import JSONFormat

from services.cli.peers import SmtpSink, WebhookReceiver, verify_signature
from services.notifier.channels import (
    DeliveryError,
    Notice,
    NoticeKind,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from services.notifier.mail import EmailChannel, message_id, send_operator_warning
from services.notifier.settings import SmtpConfig
from services.notifier.webhook import OAuthClientCredentials, WebhookChannel

pytestmark = pytest.mark.integration

SECRET = b"webhook-secret-of-wijkteam-hengelo"
SOURCE = "https://hub.twente.example"
OAUTH_CLIENT = ("zaaksysteem-hengelo", "client-secret-hengelo")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"

#: The webhook's data, exactly: a field beyond these would be data the receiver did not ask for.
DATA_FIELDS = {
    "alert_id",
    "alert_version",
    "rule_id",
    "priority",
    "deadline",
    "team_id",
    "link",
    "api_link",
}
#: What a household pseudonym looks like (services.shared.identity): `hh1-<hex>`.
HOUSEHOLD_ID = re.compile(r"\bhh\d+-[0-9a-f]{8,}", re.IGNORECASE)


def notice(kind: NoticeKind = "raised", key: str | None = None) -> Notice:
    alert_id = str(uuid.uuid4())
    return Notice(
        idempotency_key=key or f"{alert_id}:1:wijkteam-hengelo:{kind}",
        kind=kind,
        alert_id=alert_id,
        alert_version=3,
        rule_id="multi-domain",
        rule_title="Meervoudige problematiek",
        priority="HIGH",
        deadline=dt.date(2026, 12, 2),
        team_id="wijkteam-hengelo",
        team_name="Wijkteam Hengelo",
        link=f"{SOURCE}/inbox/alerts/{alert_id}",
        api_link=f"{SOURCE}/v1/alerts/{alert_id}",
    )


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def smtp_config(host: str, port: int) -> SmtpConfig:
    return SmtpConfig(
        host=host,
        port=port,
        username=None,
        password=None,
        starttls=False,
        sender="twente-hub@hub.twente.example",
        timeout_s=10.0,
    )


def subject(message: EmailMessage) -> str:
    # The standard library folds a subject that fits on one continuation line onto that line;
    # its parser then keeps the folding space a mail client drops.
    return str(message["Subject"]).strip()


def whole_message(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    headers = "\n".join(f"{name}: {value}" for name, value in message.items())
    return f"{headers}\n\n{body.get_content()}"


# -- webhook -----------------------------------------------------------------------------------


async def test_webhook_delivers_a_signed_data_poor_cloudevent(client: httpx.AsyncClient) -> None:
    sent = notice()
    with WebhookReceiver(SECRET) as receiver:
        await WebhookChannel(receiver.url, SECRET, source=SOURCE, client=client).send(sent)

    # The receiver accepted it only after the documented recipe checked the signature.
    assert receiver.accepted_keys() == [sent.idempotency_key]
    assert receiver.bad_signatures == 0
    headers = receiver.headers[0]
    assert headers["content-type"] == "application/cloudevents+json"
    assert headers["idempotency-key"] == sent.idempotency_key
    assert "authorization" not in headers
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", headers["hub-signature"])

    event = from_http(HTTPMessage(headers=headers, body=receiver.bodies[0]), JSONFormat())
    assert event.get_id() == sent.idempotency_key
    assert event.get_source() == SOURCE
    assert event.get_type() == "nl.twente-hub.alert.raised"
    assert event.get_subject() == sent.alert_id
    assert event.get_specversion() == "1.0"
    assert event.get_datacontenttype() == "application/json"
    sent_at = event.get_time()
    assert sent_at is not None
    assert abs(dt.datetime.now(dt.UTC) - sent_at) < dt.timedelta(minutes=1)
    assert event.get_data() == {
        "alert_id": sent.alert_id,
        "alert_version": 3,
        "rule_id": "multi-domain",
        "priority": "HIGH",
        "deadline": "2026-12-02",
        "team_id": "wijkteam-hengelo",
        "link": sent.link,
        "api_link": sent.api_link,
    }


async def test_webhook_carries_no_field_beyond_the_data_poor_set(
    client: httpx.AsyncClient,
) -> None:
    sent = notice("overdue")
    with WebhookReceiver(SECRET) as receiver:
        await WebhookChannel(receiver.url, SECRET, source=SOURCE, client=client).send(sent)

    [event] = receiver.accepted
    assert set(event) == {
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "specversion",
        "data",
    }
    assert set(event["data"]) == DATA_FIELDS
    raw = receiver.bodies[0].decode()
    # The rule's title and the team's name are for people; the receiver has its own.
    assert sent.rule_title not in raw
    assert sent.team_name not in raw
    assert HOUSEHOLD_ID.search(raw) is None
    assert event["type"] == "nl.twente-hub.alert.overdue"


async def test_documented_openssl_one_liner_computes_the_signature(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    with WebhookReceiver(SECRET) as receiver:
        await WebhookChannel(receiver.url, SECRET, source=SOURCE, client=client).send(notice())

    [one_liner] = [
        line
        for line in DOCS.read_text(encoding="utf-8").splitlines()
        if "openssl dgst" in line and not line.startswith("`")
    ]
    timestamp, v1 = (
        part.split("=", 1)[1] for part in receiver.headers[0]["hub-signature"].split(",")
    )
    (tmp_path / "body.json").write_bytes(receiver.bodies[0])
    shell = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        one_liner,
        cwd=tmp_path,
        env={"t": timestamp, "HUB_WEBHOOK_SECRET": SECRET.decode(), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await shell.communicate()
    assert shell.returncode == 0, err.decode()
    assert out.decode().strip() == v1


async def test_documented_python_snippet_accepts_the_hub_and_refuses_others(
    client: httpx.AsyncClient,
) -> None:
    with WebhookReceiver(SECRET) as receiver:
        await WebhookChannel(receiver.url, SECRET, source=SOURCE, client=client).send(notice())

    [snippet] = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    documented: dict[str, Any] = {}
    exec(compile(snippet, str(DOCS), "exec"), documented)
    verify = documented["verify_signature"]
    header, body = receiver.headers[0]["hub-signature"], receiver.bodies[0]
    assert verify(SECRET, header, body) is True
    assert verify(b"another-secret", header, body) is False
    assert verify(SECRET, header, body.replace(b"HIGH", b"URGENT")) is False


def test_documented_recipe_refuses_tampering_and_old_timestamps() -> None:
    body = b'{"id": "k"}'
    now = 1_796_115_600

    def header(t: int, payload: bytes, secret: bytes = SECRET) -> str:
        digest = hmac.new(secret, f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
        return f"t={t},v1={digest}"

    assert verify_signature(SECRET, header(now, body), body, now)
    assert verify_signature(SECRET, header(now - 300, body), body, now)
    assert not verify_signature(SECRET, header(now - 301, body), body, now)
    assert not verify_signature(SECRET, header(now + 301, body), body, now)
    assert not verify_signature(SECRET, header(now, body), body + b" ", now)
    assert not verify_signature(SECRET, header(now, body, b"other"), body, now)
    assert not verify_signature(SECRET, None, body, now)
    assert not verify_signature(SECRET, "v1=00", body, now)


async def test_wrong_secret_is_refused_for_good(client: httpx.AsyncClient) -> None:
    with WebhookReceiver(SECRET) as receiver:
        channel = WebhookChannel(receiver.url, b"not-the-secret", source=SOURCE, client=client)
        with pytest.raises(PermanentDeliveryError) as refused:
            await channel.send(notice())

    assert refused.value.reason == "http-401"
    assert receiver.bad_signatures == 1
    assert receiver.accepted == []


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (503, TransientDeliveryError),
        (500, TransientDeliveryError),
        (429, TransientDeliveryError),
        (408, TransientDeliveryError),
        (404, PermanentDeliveryError),
        (410, PermanentDeliveryError),
        (400, PermanentDeliveryError),
        # A redirect is not followed: the signed body goes only where it was configured to go.
        (307, PermanentDeliveryError),
    ],
)
async def test_receiver_status_decides_retry_or_give_up(
    client: httpx.AsyncClient, status: int, error: type[DeliveryError]
) -> None:
    with WebhookReceiver(SECRET, always_fail=True, fail_status=status) as receiver:
        channel = WebhookChannel(receiver.url, SECRET, source=SOURCE, client=client)
        with pytest.raises(DeliveryError) as failed:
            await channel.send(notice())

    assert type(failed.value) is error
    assert failed.value.reason == f"http-{status}"
    assert receiver.requests == 1


async def test_a_retry_after_503_is_delivered(client: httpx.AsyncClient) -> None:
    sent = notice()
    with WebhookReceiver(SECRET, fail_first=1) as receiver:
        channel = WebhookChannel(receiver.url, SECRET, source=SOURCE, client=client)
        with pytest.raises(TransientDeliveryError, match="http-503"):
            await channel.send(sent)
        await channel.send(sent)

    assert receiver.requests == 2
    assert receiver.accepted_keys() == [sent.idempotency_key]
    assert receiver.duplicates == []


async def test_a_second_delivery_of_one_notice_is_a_duplicate(client: httpx.AsyncClient) -> None:
    first, other = notice(), notice()
    with WebhookReceiver(SECRET) as receiver:
        channel = WebhookChannel(receiver.url, SECRET, source=SOURCE, client=client)
        await channel.send(first)
        await channel.send(first)
        await channel.send(other)

    assert receiver.accepted_keys() == [first.idempotency_key, other.idempotency_key]
    assert receiver.duplicates == [first.idempotency_key]
    assert receiver.bodies[0] != receiver.bodies[1], "each attempt has its own time"


async def test_connection_refused_is_transient(client: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hooks/alerts"
    channel = WebhookChannel(url, SECRET, source=SOURCE, client=client)
    with pytest.raises(TransientDeliveryError) as failed:
        await channel.send(notice())
    assert failed.value.reason == "ConnectError"


async def test_a_timeout_is_transient_and_the_retry_a_duplicate(
    client: httpx.AsyncClient,
) -> None:
    sent = notice()
    with WebhookReceiver(SECRET, hold_first=True) as receiver:
        impatient = WebhookChannel(
            receiver.url, SECRET, source=SOURCE, client=client, timeout_s=0.5
        )
        with pytest.raises(TransientDeliveryError) as failed:
            await impatient.send(sent)
        receiver.release()
        await WebhookChannel(receiver.url, SECRET, source=SOURCE, client=client).send(sent)

    assert failed.value.reason == "ReadTimeout"
    assert receiver.accepted_keys() == [sent.idempotency_key]
    assert receiver.duplicates == [sent.idempotency_key]


async def test_a_sender_stopped_mid_delivery_shows_up_as_a_duplicate(
    client: httpx.AsyncClient,
) -> None:
    sent = notice()
    with WebhookReceiver(SECRET, hold_first=True) as receiver:
        channel = WebhookChannel(receiver.url, SECRET, source=SOURCE, client=client)
        delivery = asyncio.create_task(channel.send(sent))
        assert await asyncio.to_thread(receiver.first_request.wait, 30)
        delivery.cancel()
        with pytest.raises(asyncio.CancelledError):
            await delivery
        receiver.release()
        await channel.send(sent)

    assert receiver.accepted_keys() == [sent.idempotency_key]
    assert receiver.duplicates == [sent.idempotency_key]


# -- webhook with OAuth2 client credentials ----------------------------------------------------


async def test_oauth_token_is_fetched_once_and_reused(client: httpx.AsyncClient) -> None:
    first, second = notice(), notice()
    with WebhookReceiver(SECRET, oauth_client=OAUTH_CLIENT) as receiver:
        async with OAuthClientCredentials(receiver.token_url, *OAUTH_CLIENT) as oauth:
            channel = WebhookChannel(
                receiver.url, SECRET, source=SOURCE, client=client, oauth=oauth
            )
            await channel.send(first)
            await channel.send(second)

    assert receiver.accepted_keys() == [first.idempotency_key, second.idempotency_key]
    assert receiver.tokens_issued == 1
    tokens = {headers["authorization"] for headers in receiver.headers}
    assert len(tokens) == 1
    assert tokens.pop().startswith("Bearer ")


async def test_oauth_receiver_refuses_without_a_token(client: httpx.AsyncClient) -> None:
    with WebhookReceiver(SECRET, oauth_client=OAUTH_CLIENT) as receiver:
        channel = WebhookChannel(receiver.url, SECRET, source=SOURCE, client=client)
        with pytest.raises(PermanentDeliveryError) as refused:
            await channel.send(notice())

    assert refused.value.reason == "http-401"
    assert receiver.bad_tokens == 1
    assert receiver.bad_signatures == 0
    assert receiver.accepted == []


async def test_a_revoked_token_is_renewed_once(client: httpx.AsyncClient) -> None:
    first, second = notice(), notice()
    with WebhookReceiver(SECRET, oauth_client=OAUTH_CLIENT) as receiver:
        async with OAuthClientCredentials(receiver.token_url, *OAUTH_CLIENT) as oauth:
            channel = WebhookChannel(
                receiver.url, SECRET, source=SOURCE, client=client, oauth=oauth
            )
            await channel.send(first)
            receiver.revoke_tokens()
            await channel.send(second)

    assert receiver.accepted_keys() == [first.idempotency_key, second.idempotency_key]
    assert receiver.tokens_issued == 2
    assert receiver.bad_tokens == 1
    assert receiver.requests == 3


async def test_a_wrong_signature_stays_refused_after_a_fresh_token(
    client: httpx.AsyncClient,
) -> None:
    with WebhookReceiver(SECRET, oauth_client=OAUTH_CLIENT) as receiver:
        async with OAuthClientCredentials(receiver.token_url, *OAUTH_CLIENT) as oauth:
            channel = WebhookChannel(
                receiver.url, b"not-the-secret", source=SOURCE, client=client, oauth=oauth
            )
            with pytest.raises(PermanentDeliveryError, match="http-401"):
                await channel.send(notice())

    # One fresh token and one more try, then it stops.
    assert receiver.requests == 2
    assert receiver.bad_signatures == 2
    assert receiver.tokens_issued == 2


async def test_oauth_invalid_client_is_permanent(client: httpx.AsyncClient) -> None:
    with WebhookReceiver(SECRET, oauth_client=OAUTH_CLIENT) as receiver:
        async with OAuthClientCredentials(
            receiver.token_url, OAUTH_CLIENT[0], "wrong-secret"
        ) as oauth:
            channel = WebhookChannel(
                receiver.url, SECRET, source=SOURCE, client=client, oauth=oauth
            )
            with pytest.raises(PermanentDeliveryError) as refused:
                await channel.send(notice())

    assert refused.value.reason == "oauth-invalid_client"
    assert receiver.tokens_issued == 0
    assert receiver.requests == 0


async def test_unreachable_token_endpoint_is_transient(client: httpx.AsyncClient) -> None:
    token_url = f"http://127.0.0.1:{closed_port()}/oauth/token"
    with WebhookReceiver(SECRET, oauth_client=OAUTH_CLIENT) as receiver:
        async with OAuthClientCredentials(token_url, *OAUTH_CLIENT) as oauth:
            channel = WebhookChannel(
                receiver.url, SECRET, source=SOURCE, client=client, oauth=oauth
            )
            with pytest.raises(TransientDeliveryError) as failed:
                await channel.send(notice())

    assert failed.value.reason == "oauth-ConnectError"
    assert receiver.requests == 0


# -- e-mail ------------------------------------------------------------------------------------


async def test_email_notice_arrives_in_dutch_with_the_link_and_no_household() -> None:
    sent = notice(key="alert-0b7c:v3:wijkteam-hengelo/raised")
    with SmtpSink() as sink:
        channel = EmailChannel(smtp_config(sink.host, sink.port), "wijkteam@hengelo.example")
        await channel.send(sent)
        sink.wait_messages(1)

    [message] = sink.messages
    assert subject(message) == (
        "Nieuwe melding (prioriteit hoog) voor Wijkteam Hengelo, termijn 02-12-2026"
    )
    assert message["To"] == "wijkteam@hengelo.example"
    assert message["From"] == "twente-hub@hub.twente.example"
    # ":" and "/" may not stand in a Message-ID's left part; "=3A" and "/" do.
    assert message["Message-ID"] == "<alert-0b7c=3Av3=3Awijkteam-hengelo/raised@twente-hub>"
    assert message["X-Hub-Idempotency-Key"] == sent.idempotency_key
    text = whole_message(message)
    for expected in (sent.link, "Meervoudige problematiek", "hoog", "02-12-2026"):
        assert expected in text
    # The canary: the mail holds only what the inbox link needs, nothing the receiver's system
    # would use and no household.
    assert sent.api_link not in text
    assert sent.rule_id not in text
    assert HOUSEHOLD_ID.search(text) is None
    assert "household" not in text.lower()
    assert {name.lower() for name in message} == {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "x-hub-idempotency-key",
        "auto-submitted",
        "content-type",
        "content-transfer-encoding",
        "mime-version",
    }


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (
            "updated",
            "Melding bijgewerkt (prioriteit hoog) voor Wijkteam Hengelo, termijn 02-12-2026",
        ),
        (
            "overdue",
            "Melding over de termijn (prioriteit hoog) voor Wijkteam Hengelo, termijn 02-12-2026",
        ),
    ],
)
async def test_email_subject_says_what_happened(kind: NoticeKind, expected: str) -> None:
    with SmtpSink() as sink:
        channel = EmailChannel(smtp_config(sink.host, sink.port), "wijkteam@hengelo.example")
        await channel.send(notice(kind))
        sink.wait_messages(1)

    assert subject(sink.messages[0]) == expected


def test_message_ids_of_different_keys_differ() -> None:
    keys = ["a:b", "a/b", "a.b", "a=3Ab", "a b", "a-b", "ä:b"]
    ids = [message_id(key) for key in keys]
    assert len(set(ids)) == len(keys)
    for value in ids:
        assert re.fullmatch(r"<[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+@twente-hub>", value), value


@pytest.mark.parametrize(
    ("code", "error"), [(550, PermanentDeliveryError), (451, TransientDeliveryError)]
)
async def test_refused_recipient_decides_retry_or_give_up(
    code: int, error: type[DeliveryError]
) -> None:
    with SmtpSink(refuse_code=code) as sink:
        channel = EmailChannel(smtp_config(sink.host, sink.port), "wijkteam@hengelo.example")
        with pytest.raises(DeliveryError) as failed:
            await channel.send(notice())

    assert type(failed.value) is error
    assert failed.value.reason == f"smtp-{code}"
    assert sink.messages == []


async def test_unreachable_smtp_server_is_transient() -> None:
    channel = EmailChannel(smtp_config("127.0.0.1", closed_port()), "wijkteam@hengelo.example")
    with pytest.raises(TransientDeliveryError) as failed:
        await channel.send(notice())
    assert failed.value.reason == "SMTPConnectError"


async def test_operator_warning_arrives_with_the_commands() -> None:
    with SmtpSink() as sink:
        await send_operator_warning(
            smtp_config(sink.host, sink.port),
            "beheer@hub.twente.example",
            team_id="wijkteam-hengelo",
            team_name="Wijkteam Hengelo",
            channel_kind="webhook",
            reason="http-503",
            failed=4,
            day=dt.date(2026, 12, 1),
            dashboard_link=f"{SOURCE}/dashboard",
        )
        sink.wait_messages(1)

    [message] = sink.messages
    assert message["To"] == "beheer@hub.twente.example"
    assert subject(message) == (
        "Bezorging mislukt voor Wijkteam Hengelo: 4 melding(en) niet bezorgd"
    )
    text = whole_message(message)
    for expected in (
        "4 bezorging(en)",
        "kanaal webhook",
        "http-503",
        "01-12-2026",
        "hub deliveries list --status failed --team wijkteam-hengelo",
        "hub deliveries replay",
        f"{SOURCE}/dashboard",
    ):
        assert expected in text


async def test_operator_warning_refused_is_a_delivery_error() -> None:
    with SmtpSink(refuse_code=550) as sink, pytest.raises(PermanentDeliveryError, match="smtp-550"):
        await send_operator_warning(
            smtp_config(sink.host, sink.port),
            "beheer@hub.twente.example",
            team_id="wijkteam-hengelo",
            team_name="Wijkteam Hengelo",
            channel_kind="email",
            reason="smtp-451",
            failed=1,
            day=dt.date(2026, 12, 1),
            dashboard_link=f"{SOURCE}/dashboard",
        )
