"""Rules as data: alerts carry the rule's title and the condition that held.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "alerts", sa.Column("rule_title", sa.String(120), nullable=False, server_default="")
    )
    op.add_column("alerts", sa.Column("condition", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    op.drop_column("alerts", "condition")
    op.drop_column("alerts", "rule_title")
