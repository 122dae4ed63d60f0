"""Partner ingest: receipts of accepted events, idempotency keys, CSV uploads and their
per-row problems, and which dead letters were replayed.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _now() -> sa.Column[dt.datetime]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "ingest_receipts",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("partner_event_id", sa.String(100), primary_key=True),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("content_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
            index=True,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("route", sa.String(80), nullable=False),
        sa.Column("request_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", JSONB),
        _now(),
    )
    op.create_table(
        "uploads",
        sa.Column("upload_id", sa.String(36), primary_key=True),
        sa.Column("partner_id", sa.String(64), nullable=False, index=True),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("rows_read", sa.Integer, server_default="0", nullable=False),
        sa.Column("rows_accepted", sa.Integer, server_default="0", nullable=False),
        sa.Column("rows_duplicate", sa.Integer, server_default="0", nullable=False),
        sa.Column("rows_rejected", sa.Integer, server_default="0", nullable=False),
        sa.Column("failure", sa.String(300)),
        _now(),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "upload_problems",
        sa.Column("problem_id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "upload_id",
            sa.String(36),
            sa.ForeignKey("uploads.upload_id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("line", sa.Integer, nullable=False),
        sa.Column("field", sa.String(120), nullable=False),
        sa.Column("message", sa.String(300), nullable=False),
    )
    op.create_table(
        "deadletter_replays",
        sa.Column("topic", sa.String(255), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("offset", sa.BigInteger, primary_key=True),
        sa.Column(
            "replayed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_table("deadletter_replays")
    op.drop_table("upload_problems")
    op.drop_table("uploads")
    op.drop_table("idempotency_keys")
    op.drop_table("ingest_receipts")
