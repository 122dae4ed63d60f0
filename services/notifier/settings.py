"""Settings of the notifier: team API and inbox, delivery retries, SMTP, operator warnings.

The teams themselves, their members and channels live in PostgreSQL (`hub teams`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from services.shared.config import DatabaseSettings, HubSettings, VaultSettings
from services.shared.errors import ConfigurationError


class NotifierSettings(HubSettings, DatabaseSettings, VaultSettings):
    notifier_host: str = "127.0.0.1"
    notifier_port: int = Field(8003, ge=1, le=65535)
    #: How often the notifier looks for open alerts past their deadline.
    notifier_overdue_check_s: float = Field(60.0, gt=0)
    #: Where teams reach this notifier: links in webhooks and e-mails point here.
    notifier_public_url: str = "http://127.0.0.1:8003"
    #: Signs the inbox's session cookie. **Secret**; a random one per start when unset
    #: (members then log in again after a restart).
    notifier_session_secret: SecretStr | None = None
    #: Hours an inbox login lasts.
    notifier_session_hours: float = Field(10.0, gt=0, le=24 * 7)
    #: Attempts per delivery, waits between them doubling from `initial` up to `max` (stamina).
    delivery_attempts: int = Field(8, ge=1, le=50)
    delivery_wait_initial_s: float = Field(2.0, gt=0)
    delivery_wait_max_s: float = Field(300.0, gt=0)
    #: Seconds one HTTP or SMTP attempt may take.
    delivery_timeout_s: float = Field(10.0, gt=0)
    #: Deliveries in flight at once (at most one per channel, so one slow receiver
    #: does not hold up the others).
    delivery_concurrency: int = Field(8, ge=1, le=64)
    #: SMTP server for e-mail channels and operator warnings; no host, no e-mail.
    smtp_host: str | None = None
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_from: str = "twente-hub@localhost"
    #: Who gets the operator warning when a delivery finally fails (one e-mail per team a day).
    operator_email: str | None = None

    @field_validator(
        "notifier_session_secret",
        "smtp_host",
        "smtp_username",
        "smtp_password",
        "operator_email",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty variable (as compose passes an unset one) means not set."""
        return None if value == "" else value

    @model_validator(mode="after")
    def _fit_for_production(self) -> NotifierSettings:
        if self.environment != "production":
            return self
        if (
            self.notifier_session_secret is None
            or len(self.notifier_session_secret.get_secret_value()) < 32
        ):
            raise ConfigurationError(
                "HUB_NOTIFIER_SESSION_SECRET must be a random secret of at least 32 characters "
                "in production (inbox logins would not survive a restart or a second replica)"
            )
        host = urlsplit(self.notifier_public_url).hostname
        if host in (None, "localhost", "127.0.0.1", "::1", "0.0.0.0"):
            raise ConfigurationError(
                "HUB_NOTIFIER_PUBLIC_URL must be the address teams reach the notifier at in "
                "production: links in webhooks and e-mails point there"
            )
        return self


class SmtpConfig(BaseModel):
    """What the e-mail senders need of the settings."""

    host: str
    port: int
    username: str | None
    password: SecretStr | None
    starttls: bool
    sender: str
    timeout_s: float

    @classmethod
    def of(cls, settings: NotifierSettings) -> SmtpConfig | None:
        if settings.smtp_host is None:
            return None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            sender=settings.smtp_from,
            timeout_s=settings.delivery_timeout_s,
        )
