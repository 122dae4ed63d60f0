"""The partner registry: partners, what they may publish, and their API keys as digests.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "partners",
        sa.Column("partner_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("partner_type", sa.String(32), nullable=False),
        sa.Column("event_types", sa.ARRAY(sa.String(32)), nullable=False),
        sa.Column("may_send_bsn", sa.Boolean, server_default="false", nullable=False),
        sa.Column("active", sa.Boolean, server_default="true", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_table(
        "partner_api_keys",
        sa.Column("key_id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column(
            "partner_id",
            sa.String(64),
            sa.ForeignKey("partners.partner_id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("key_sha256", sa.LargeBinary(32), nullable=False, unique=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table("partner_api_keys")
    op.drop_table("partners")
