"""Team actions on alerts (claim, outcome) and the outbox of outcomes for Kafka.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alerts", sa.Column("claimed_by", sa.String(64)))
    op.add_column("alerts", sa.Column("claimed_at", sa.DateTime(timezone=True)))
    op.create_table(
        "alert_actions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "alert_id",
            sa.String(36),
            sa.ForeignKey("alerts.alert_id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(48)),
    )
    op.create_table(
        "outcome_outbox",
        sa.Column(
            "alert_id",
            sa.String(36),
            sa.ForeignKey("alerts.alert_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("outcome", sa.String(48), nullable=False),
        sa.Column("closed_on", sa.Date, nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), index=True),
    )


def downgrade() -> None:
    op.drop_table("outcome_outbox")
    op.drop_table("alert_actions")
    op.drop_column("alerts", "claimed_at")
    op.drop_column("alerts", "claimed_by")
