"""Deliveries are leased while sent (no transaction held open); notes remember which domains
their writer's purposes disclose, so only teams seeing all of them read the note.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("lease_until", sa.DateTime(timezone=True)))
    # Notes written before: readable only by teams that see every domain (the safe side).
    op.add_column(
        "alert_notes",
        sa.Column(
            "domains",
            sa.ARRAY(sa.String(32)),
            nullable=False,
            server_default="{debt,wvggz,streettriage,care}",
        ),
    )
    op.alter_column("alert_notes", "domains", server_default=None)


def downgrade() -> None:
    op.drop_column("alert_notes", "domains")
    op.drop_column("deliveries", "lease_until")
