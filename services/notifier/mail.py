"""The e-mail channel and the operator warning: short Dutch plain-text mails over SMTP.

A notice mail holds the team, the rule's title, the priority, the deadline and the inbox link;
never a household id or anything about the household: whoever reads the mail logs in to the
inbox to see more. Its Message-ID comes from the notice's idempotency key, so a mail system can
drop a second copy after a retry or a replay.

The SMTP answer decides: 5xx (and every recipient refused with 5xx) cannot succeed later
(PermanentDeliveryError, reason `smtp-<code>`); 4xx, timeouts and lost connections may
(TransientDeliveryError).
"""

from __future__ import annotations

import datetime as dt
import email.utils
from email.message import EmailMessage

import aiosmtplib

from services.notifier.channels import Notice, PermanentDeliveryError, TransientDeliveryError
from services.notifier.settings import SmtpConfig

__all__ = ["EmailChannel", "compose_notice", "message_id", "send_operator_warning"]

IDEMPOTENCY_HEADER = "X-Hub-Idempotency-Key"
MESSAGE_ID_DOMAIN = "twente-hub"

_PRIORITY = {"NORMAL": "normaal", "HIGH": "hoog", "URGENT": "spoed"}

_SUBJECT = {
    "raised": "Nieuwe melding",
    "updated": "Melding bijgewerkt",
    "overdue": "Melding over de termijn",
}

_OPENING = {
    "raised": "Er is een nieuwe melding voor {team}.",
    "updated": "Een melding voor {team} is bijgewerkt.",
    "overdue": "De termijn van een melding voor {team} is verstreken.",
}

# RFC 5322 atext without "=" (our escape character); "." is left out too, since a dot-atom may
# not start or end with one or hold two in a row. Each other byte becomes =XX, so two different
# keys never share a Message-ID.
_MESSAGE_ID_SAFE = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/?^_`{|}~"
)


def message_id(key: str) -> str:
    """`<key@twente-hub>`, with each character a Message-ID may not hold written as =XX."""
    local = "".join(
        chr(byte) if chr(byte) in _MESSAGE_ID_SAFE else f"={byte:02X}" for byte in key.encode()
    )
    return f"<{local}@{MESSAGE_ID_DOMAIN}>"


def _date(day: dt.date) -> str:
    return day.strftime("%d-%m-%Y")


def _new_message(sender: str, to: str, subject: str, key: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = message_id(key)
    message[IDEMPOTENCY_HEADER] = key
    # RFC 3834: out-of-office replies and the like stay away from an address nobody reads.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


def compose_notice(sender: str, to: str, notice: Notice) -> EmailMessage:
    """The Dutch notice mail. Only the fields named here reach the mail."""
    priority = _PRIORITY.get(notice.priority, notice.priority.lower())
    deadline = _date(notice.deadline)
    subject = (
        f"{_SUBJECT[notice.kind]} (prioriteit {priority}) voor {notice.team_name}, "
        f"termijn {deadline}"
    )
    body = "\n".join(
        [
            _OPENING[notice.kind].format(team=notice.team_name),
            "",
            f"Signaal:    {notice.rule_title}",
            f"Prioriteit: {priority}",
            f"Termijn:    {deadline}",
            "",
            "Bekijk de melding in de inbox (inloggen nodig):",
            notice.link,
            "",
            "Deze e-mail bevat bewust geen gegevens over het huishouden; die staan alleen in de",
            "inbox. Dit bericht is automatisch verstuurd; een antwoord wordt niet gelezen.",
        ]
    )
    return _new_message(sender, to, subject, notice.idempotency_key, body)


class EmailChannel:
    """Delivers notices to one e-mail address (a team's shared mailbox)."""

    kind = "email"

    def __init__(self, smtp: SmtpConfig, to: str) -> None:
        self.to = to
        self._smtp = smtp

    async def send(self, notice: Notice) -> None:
        await _deliver(self._smtp, compose_notice(self._smtp.sender, self.to, notice))


async def send_operator_warning(
    smtp: SmtpConfig,
    to: str,
    *,
    team_id: str,
    team_name: str,
    channel_kind: str,
    reason: str,
    failed: int,
    day: dt.date,
    dashboard_link: str,
) -> None:
    """Tells the operator on call that the hub gave up delivering to a team's channel on `day`,
    how many of the team's deliveries stand failed (`failed`), and how to find and replay them.
    Raises DeliveryErrors like the channels."""
    subject = f"Bezorging mislukt voor {team_name}: {failed} melding(en) niet bezorgd"
    body = "\n".join(
        [
            f"Op {_date(day)} gaf de hub het op een melding voor {team_name} ({team_id}) te",
            f"bezorgen via het kanaal {channel_kind}. In totaal staan {failed} bezorging(en) aan",
            "dit team op mislukt.",
            f"Laatste reden: {reason}",
            "",
            "De meldingen zelf staan in de inbox van het team; alleen de bezorging ontbreekt.",
            "",
            "Bekijk de mislukte bezorgingen:",
            f"    hub deliveries list --status failed --team {team_id}",
            "Bezorg ze opnieuw zodra het kanaal weer werkt:",
            f"    hub deliveries replay --since {day.isoformat()} --team {team_id} --failed-only",
            "",
            f"Overzicht: {dashboard_link}",
        ]
    )
    # One warning per team a day (the caller's rule): a resent warning has the same Message-ID.
    key = f"operator-warning:{team_id}:{day.isoformat()}"
    await _deliver(smtp, _new_message(smtp.sender, to, subject, key, body))


async def _deliver(smtp: SmtpConfig, message: EmailMessage) -> None:
    try:
        await aiosmtplib.send(
            message,
            hostname=smtp.host,
            port=smtp.port,
            username=smtp.username,
            password=smtp.password.get_secret_value() if smtp.password is not None else None,
            # False, not None: aiosmtplib would otherwise upgrade whenever the server offers it.
            start_tls=smtp.starttls,
            timeout=smtp.timeout_s,
        )
    except aiosmtplib.SMTPResponseException as exc:
        raise _by_code(exc.code) from exc
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [refused.code for refused in exc.recipients]
        if codes and all(code >= 500 for code in codes):
            raise PermanentDeliveryError(f"smtp-{codes[0]}") from exc
        retryable = [code for code in codes if code < 500]
        raise TransientDeliveryError(f"smtp-{retryable[0]}" if retryable else "smtp") from exc
    except aiosmtplib.SMTPNotSupported as exc:
        # The server lacks what the settings demand (STARTTLS, AUTH): fix the settings first.
        raise PermanentDeliveryError(type(exc).__name__) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        # SMTPConnectError, SMTPServerDisconnected, SMTPTimeoutError and plain socket errors.
        raise TransientDeliveryError(type(exc).__name__) from exc


def _by_code(code: int) -> TransientDeliveryError | PermanentDeliveryError:
    reason = f"smtp-{code}"
    return PermanentDeliveryError(reason) if code >= 500 else TransientDeliveryError(reason)
