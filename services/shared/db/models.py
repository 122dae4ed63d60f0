"""Tables of the hub's PostgreSQL database. Alembic migrations in `migrations/` create them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Alert(Base):
    """One household alert at its newest version. Rows hold pseudonyms only."""

    __tablename__ = "alerts"

    alert_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), index=True)
    municipality_code: Mapped[str] = mapped_column(String(6), index=True)
    wijk_code: Mapped[str | None] = mapped_column(String(8))
    rule_id: Mapped[str] = mapped_column(String(64), index=True)
    rule_version: Mapped[int] = mapped_column(Integer)
    episode: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    priority: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(64))
    legal_basis: Mapped[str] = mapped_column(Text)
    raised_on: Mapped[dt.date] = mapped_column(Date)
    deadline: Mapped[dt.date] = mapped_column(Date, index=True)
    deadline_rule: Mapped[str] = mapped_column(String(64))
    domains: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    #: The rule's condition in Dutch; empty for alerts from before rules were data.
    condition: Mapped[str] = mapped_column(Text, default="", server_default="")
    rule_title: Mapped[str] = mapped_column(String(120), default="", server_default="")
    explanation: Mapped[str] = mapped_column(Text)
    #: How domains a team may not see appear: "mention" ("another domain is involved") or "hide".
    undisclosed_domains: Mapped[str] = mapped_column(
        String(16), default="mention", server_default="mention"
    )
    #: The team member who took the alert on (a member id of the team directory, no name).
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    claimed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(48))
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: When the notifier found the deadline passed with the alert still open (escalated once).
    overdue_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Set when retention or erasure removed the alert's personal details for good.
    details_removed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    first_stored_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    #: Of the event behind the newest version (Kafka headers hub-correlation-id and
    #: hub-accepted-at); None for alerts from before, or records without them.
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    #: When ingest accepted that event.
    accepted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    contributions: Mapped[list[Contribution]] = relationship(
        back_populates="alert", order_by="Contribution.event_date", lazy="selectin"
    )


class Contribution(Base):
    """An event that made an alert fire; no personal details."""

    __tablename__ = "alert_contributions"

    alert_id: Mapped[str] = mapped_column(
        ForeignKey("alerts.alert_id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32))
    domain: Mapped[str] = mapped_column(String(32))
    partner_type: Mapped[str] = mapped_column(String(32))
    event_date: Mapped[dt.date] = mapped_column(Date)
    creditor_type: Mapped[str | None] = mapped_column(String(32))
    amount_band: Mapped[str | None] = mapped_column(String(32))

    alert: Mapped[Alert] = relationship(back_populates="contributions")


#: Data keys live in their own schema so data backups can leave them out (docs/privacy.md):
#: a restored backup of the data then cannot bring back what an erasure shredded.
KEYRING_SCHEMA = "keyring"


class HouseholdKey(Base):
    """A household's data key, wrapped by the master key. Deleting the row shreds its details."""

    __tablename__ = "household_keys"
    __table_args__ = {"schema": KEYRING_SCHEMA}  # noqa: RUF012 (SQLAlchemy reads it)

    household_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(36), unique=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ContactDetail(Base):
    """The encrypted contact details that came with one event; metadata in clear, no identity."""

    __tablename__ = "contact_details"

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), index=True)
    key_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(32))
    domain: Mapped[str] = mapped_column(String(32))
    event_date: Mapped[dt.date] = mapped_column(Date, index=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    stored_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class AccessLogEntry(Base):
    """One view of an alert's personal details. Append-only: a trigger refuses change."""

    __tablename__ = "access_log"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
    member_id: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[str] = mapped_column(String(64))
    alert_id: Mapped[str] = mapped_column(String(36), index=True)
    household_id: Mapped[str] = mapped_column(String(64), index=True)
    purpose: Mapped[str] = mapped_column(String(64))
    domains: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    action: Mapped[str] = mapped_column(String(32))


class AlertAction(Base):
    """What a team member did with an alert, and when: claim or outcome. No free text."""

    __tablename__ = "alert_actions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    alert_id: Mapped[str] = mapped_column(
        ForeignKey("alerts.alert_id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    team_id: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str | None] = mapped_column(String(48))


class OutcomeOutbox(Base):
    """An outcome to publish on the alert-outcomes topic; written in the same transaction as
    the outcome itself, so an outcome stored is an outcome published, sooner or later. The
    record is built from the alert at publishing time, so a pseudonym rotation in between
    is followed."""

    __tablename__ = "outcome_outbox"

    alert_id: Mapped[str] = mapped_column(
        ForeignKey("alerts.alert_id", ondelete="CASCADE"), primary_key=True
    )
    outcome: Mapped[str] = mapped_column(String(48))
    closed_on: Mapped[dt.date] = mapped_column(Date)
    team_id: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), index=True)

    alert: Mapped[Alert] = relationship(lazy="joined")


class PrivacyRun(Base):
    """What a purge, erasure or rotation did: counts, ids and reason; never personal data."""

    __tablename__ = "privacy_runs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    reference: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONB)


class PseudonymLink(Base):
    """A household pseudonym of an old secret version and its successor after a rotation."""

    __tablename__ = "pseudonym_links"

    old_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    new_id: Mapped[str] = mapped_column(String(64), index=True)
    to_version: Mapped[int] = mapped_column(Integer)
    linked_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Team(Base):
    """A wijkteam or another team that works alerts: where it works, which purposes it serves.

    It covers the municipalities in `municipalities` whole and the wijken in `wijken`; the
    fallback team gets what no team covers (docs/notifier.md#routing).
    """

    __tablename__ = "teams"

    team_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    purposes: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    municipalities: Mapped[list[str]] = mapped_column(ARRAY(String(6)), default=list)
    wijken: Mapped[list[str]] = mapped_column(ARRAY(String(8)), default=list)
    fallback: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class TeamMember(Base):
    """A member of a team and the SHA-256 of their API token (the token itself is never kept)."""

    __tablename__ = "team_members"

    member_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.team_id", ondelete="CASCADE"), index=True
    )
    token_sha256: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class TeamChannel(Base):
    """Where a team is told of its alerts besides the inbox: a webhook or an e-mail address.

    Secrets (the webhook's HMAC key, an OAuth2 client secret) are sealed with the master key.
    """

    __tablename__ = "team_channels"

    channel_id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.team_id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    #: The webhook URL or the e-mail address (a team's functional mailbox, not a resident's).
    target: Mapped[str] = mapped_column(Text)
    #: Which notices it gets: raised, updated, overdue.
    notices: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    oauth_token_url: Mapped[str | None] = mapped_column(Text)
    oauth_client_id: Mapped[str | None] = mapped_column(String(200))
    oauth_scope: Mapped[str | None] = mapped_column(String(200))
    sealed_secrets: Mapped[bytes | None] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class AlertRoute(Base):
    """An alert was routed to a team: the team sees it in its inbox and API."""

    __tablename__ = "alert_routes"

    alert_id: Mapped[str] = mapped_column(
        ForeignKey("alerts.alert_id", ondelete="CASCADE"), primary_key=True
    )
    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.team_id", ondelete="CASCADE"), primary_key=True, index=True
    )
    #: How the team was found: wijk, municipality or fallback.
    via: Mapped[str] = mapped_column(String(16))
    routed_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Delivery(Base):
    """One notice for one channel of one team: the delivery outbox. Every attempt is kept."""

    __tablename__ = "deliveries"

    delivery_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    #: The receiver's deduplication key; the same across retries and replays.
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    alert_id: Mapped[str] = mapped_column(
        ForeignKey("alerts.alert_id", ondelete="CASCADE"), index=True
    )
    alert_version: Mapped[int] = mapped_column(Integer)
    #: Of the event behind that version (the alert keeps only its newest version's).
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    notice: Mapped[str] = mapped_column(String(16))
    team_id: Mapped[str] = mapped_column(String(64), index=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("team_channels.channel_id", ondelete="CASCADE"), index=True
    )
    channel_kind: Mapped[str] = mapped_column(String(16))
    #: pending, delivered or failed (gave up).
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    replayed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Until when a notifier is sending it; a crashed one's lease runs out and another goes on.
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class DeliveryAttempt(Base):
    """One try to deliver: when, how long, and what came of it (no receiver answer, no data)."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.delivery_id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    channel_kind: Mapped[str] = mapped_column(String(16))
    #: delivered, retry (transient error) or failed (permanent, or the last attempt).
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[int] = mapped_column(Integer)


class OperatorWarning(Base):
    """The operator was e-mailed about a team's failed deliveries on this day (once a day)."""

    __tablename__ = "operator_warnings"

    team_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    sent_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AlertNote(Base):
    """A member's note on an alert. Free text can hold anything, so it is sealed with the
    household's data key: erasure shreds it, retention deletes it with the details."""

    __tablename__ = "alert_notes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    alert_id: Mapped[str] = mapped_column(
        ForeignKey("alerts.alert_id", ondelete="CASCADE"), index=True
    )
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    team_id: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(36))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    #: The domains the writer's purposes disclose: only a team that sees all of them may read
    #: the note (a care worker's note may speak of health; a debt team must not read it).
    domains: Mapped[list[str]] = mapped_column(ARRAY(String(32)), default=list)


class Partner(Base):
    """A partner that publishes events: its type, what it may publish, whether it may send a
    BSN. Its API keys are in `partner_api_keys`."""

    __tablename__ = "partners"

    partner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    partner_type: Mapped[str] = mapped_column(String(32))
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    may_send_bsn: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class PartnerApiKey(Base):
    """The SHA-256 of one of a partner's API keys; after a rotation the old key expires."""

    __tablename__ = "partner_api_keys"

    key_id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    partner_id: Mapped[str] = mapped_column(
        ForeignKey("partners.partner_id", ondelete="CASCADE"), index=True
    )
    key_sha256: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class IngestReceipt(Base):
    """An event accepted once from a partner: (partner, partner_event_id) is taken.

    Holds a SHA-256 of the event's content, never the content, so a repeat is told from a
    different event re-using the id. `published_at` stays empty until the source topic has it.
    """

    __tablename__ = "ingest_receipts"

    partner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner_event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(36))
    content_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    received_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class IdempotencyKey(Base):
    """A partner's `Idempotency-Key` on a batch or upload, and the answer it got.

    `status_code` is empty while the first request with the key is still being handled.
    """

    __tablename__ = "idempotency_keys"

    partner_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    route: Mapped[str] = mapped_column(String(80))
    request_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Upload(Base):
    """A partner's CSV file and how far processing got; counts only, never a row's content."""

    __tablename__ = "uploads"

    upload_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    partner_id: Mapped[str] = mapped_column(String(64), index=True)
    event_type: Mapped[str] = mapped_column(String(32))
    #: queued, processing, done, failed or interrupted
    status: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    rows_read: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rows_accepted: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rows_duplicate: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rows_rejected: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failure: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class UploadProblem(Base):
    """One fault of one row of an upload: the line, the column (field path) and a message."""

    __tablename__ = "upload_problems"

    problem_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    upload_id: Mapped[str] = mapped_column(
        ForeignKey("uploads.upload_id", ondelete="CASCADE"), index=True
    )
    line: Mapped[int] = mapped_column(Integer)
    field: Mapped[str] = mapped_column(String(120))
    message: Mapped[str] = mapped_column(String(300))


class DeadletterReplay(Base):
    """A dead letter `hub deadletter replay` has sent back to its source topic."""

    __tablename__ = "deadletter_replays"

    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    offset: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    replayed_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
