"""Alerts keep the correlation id and the acceptance time of the event behind their newest
version (Kafka headers hub-correlation-id and hub-accepted-at), for the delivery's log lines
and the event-to-delivery histogram.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alerts", sa.Column("correlation_id", sa.String(64), nullable=True))
    op.add_column("alerts", sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("alerts", "accepted_at")
    op.drop_column("alerts", "correlation_id")
