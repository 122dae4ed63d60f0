"""Privacy: encrypted contact details, data keys, append-only access log, privacy runs, links.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "alerts",
        sa.Column("undisclosed_domains", sa.String(16), nullable=False, server_default="mention"),
    )
    op.add_column("alerts", sa.Column("outcome", sa.String(48)))
    op.add_column("alerts", sa.Column("closed_at", sa.DateTime(timezone=True)))
    op.add_column("alerts", sa.Column("details_removed_at", sa.DateTime(timezone=True)))

    op.execute("CREATE SCHEMA keyring")
    op.create_table(
        "household_keys",
        sa.Column("household_id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(36), nullable=False, unique=True),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.Column("master_key_id", sa.String(32), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema="keyring",
    )
    op.create_table(
        "contact_details",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("household_id", sa.String(64), nullable=False, index=True),
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("domain", sa.String(32), nullable=False),
        sa.Column("event_date", sa.Date, nullable=False, index=True),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column(
            "stored_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "access_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
            index=True,
        ),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("alert_id", sa.String(36), nullable=False, index=True),
        sa.Column("household_id", sa.String(64), nullable=False, index=True),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("domains", sa.ARRAY(sa.String(32)), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
    )
    # Append-only: the privacy officer's record cannot be edited or emptied through SQL.
    op.execute(
        """
        CREATE FUNCTION access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'access_log is append-only: % refused', TG_OP;
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER access_log_no_change BEFORE UPDATE OR DELETE ON access_log "
        "FOR EACH ROW EXECUTE FUNCTION access_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION access_log_append_only()"
    )
    op.create_table(
        "privacy_runs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "finished_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("reference", sa.Text),
        sa.Column("summary", JSONB, nullable=False),
    )
    op.create_table(
        "pseudonym_links",
        sa.Column("old_id", sa.String(64), primary_key=True),
        sa.Column("new_id", sa.String(64), nullable=False, index=True),
        sa.Column("to_version", sa.Integer, nullable=False),
        sa.Column(
            "linked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("pseudonym_links")
    op.drop_table("privacy_runs")
    op.drop_table("access_log")
    op.execute("DROP FUNCTION access_log_append_only()")
    op.drop_table("contact_details")
    op.drop_table("household_keys", schema="keyring")
    op.execute("DROP SCHEMA keyring")
    for column in ("details_removed_at", "closed_at", "outcome", "undisclosed_domains"):
        op.drop_column("alerts", column)
