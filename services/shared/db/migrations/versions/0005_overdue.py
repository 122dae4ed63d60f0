"""Alerts remember when their deadline was found passed while still open.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alerts", sa.Column("overdue_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("alerts", "overdue_at")
