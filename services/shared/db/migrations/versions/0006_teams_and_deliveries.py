"""The team directory, routing of alerts to teams, the delivery outbox with its attempts,
operator warnings and sealed notes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _now() -> sa.Column[Any]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def _alert_fk() -> sa.Column[Any]:
    return sa.Column(
        "alert_id",
        sa.String(36),
        sa.ForeignKey("alerts.alert_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )


def upgrade() -> None:
    op.create_table(
        "teams",
        sa.Column("team_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("purposes", sa.ARRAY(sa.String(64)), nullable=False),
        sa.Column("municipalities", sa.ARRAY(sa.String(6)), nullable=False),
        sa.Column("wijken", sa.ARRAY(sa.String(8)), nullable=False),
        sa.Column("fallback", sa.Boolean, server_default="false", nullable=False),
        sa.Column("active", sa.Boolean, server_default="true", nullable=False),
        _now(),
    )
    op.create_table(
        "team_members",
        sa.Column("member_id", sa.String(64), primary_key=True),
        sa.Column(
            "team_id",
            sa.String(64),
            sa.ForeignKey("teams.team_id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("token_sha256", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column("active", sa.Boolean, server_default="true", nullable=False),
        _now(),
    )
    op.create_table(
        "team_channels",
        sa.Column("channel_id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column(
            "team_id",
            sa.String(64),
            sa.ForeignKey("teams.team_id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("notices", sa.ARRAY(sa.String(16)), nullable=False),
        sa.Column("oauth_token_url", sa.Text),
        sa.Column("oauth_client_id", sa.String(200)),
        sa.Column("oauth_scope", sa.String(200)),
        sa.Column("sealed_secrets", sa.LargeBinary),
        sa.Column("active", sa.Boolean, server_default="true", nullable=False),
        _now(),
    )
    op.create_table(
        "alert_routes",
        sa.Column(
            "alert_id",
            sa.String(36),
            sa.ForeignKey("alerts.alert_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column(
            "team_id",
            sa.String(64),
            sa.ForeignKey("teams.team_id", ondelete="CASCADE"),
            primary_key=True,
            index=True,
        ),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column(
            "routed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_table(
        "deliveries",
        sa.Column("delivery_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
        _alert_fk(),
        sa.Column("alert_version", sa.Integer, nullable=False),
        sa.Column("notice", sa.String(16), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False, index=True),
        sa.Column(
            "channel_id",
            sa.Integer,
            sa.ForeignKey("team_channels.channel_id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("channel_kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer, server_default="0", nullable=False),
        sa.Column("last_error", sa.String(64)),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
            index=True,
        ),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("replayed_at", sa.DateTime(timezone=True)),
    )
    # The dispatcher looks for pending deliveries only.
    op.create_index(
        "ix_deliveries_pending",
        "deliveries",
        ["delivery_id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "delivery_id",
            sa.BigInteger,
            sa.ForeignKey("deliveries.delivery_id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel_kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.String(64)),
        sa.Column("duration_ms", sa.Integer, nullable=False),
    )
    op.create_table(
        "operator_warnings",
        sa.Column("team_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column(
            "sent_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_table(
        "alert_notes",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        _alert_fk(),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "alert_notes",
        "operator_warnings",
        "delivery_attempts",
        "deliveries",
        "alert_routes",
        "team_channels",
        "team_members",
        "teams",
    ):
        op.drop_table(table)
