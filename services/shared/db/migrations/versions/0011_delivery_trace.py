"""A delivery keeps the correlation id of the event behind the alert version it is a notice
of, so its log lines name that event, not the one behind a later version.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("correlation_id", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("deliveries", "correlation_id")
