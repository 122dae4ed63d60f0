"""Tables of the hub's PostgreSQL database. Alembic migrations in `migrations/` create them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ARRAY, Date, DateTime, ForeignKey, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Alert(Base):
    """One household alert at its newest version. Rows hold pseudonyms only."""

    __tablename__ = "alerts"

    alert_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    household_id: Mapped[str] = mapped_column(String(64), index=True)
    municipality_code: Mapped[str] = mapped_column(String(6), index=True)
    wijk_code: Mapped[str | None] = mapped_column(String(8))
    rule_id: Mapped[str] = mapped_column(String(64), index=True)
    rule_version: Mapped[int] = mapped_column(Integer)
    episode: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    priority: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(64))
    legal_basis: Mapped[str] = mapped_column(Text)
    raised_on: Mapped[dt.date] = mapped_column(Date)
    deadline: Mapped[dt.date] = mapped_column(Date, index=True)
    deadline_rule: Mapped[str] = mapped_column(String(64))
    domains: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    explanation: Mapped[str] = mapped_column(Text)
    first_stored_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    contributions: Mapped[list[Contribution]] = relationship(
        back_populates="alert", order_by="Contribution.event_date", lazy="selectin"
    )


class Contribution(Base):
    """An event that made an alert fire; no personal details."""

    __tablename__ = "alert_contributions"

    alert_id: Mapped[str] = mapped_column(
        ForeignKey("alerts.alert_id", ondelete="CASCADE"), primary_key=True
    )
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(32))
    domain: Mapped[str] = mapped_column(String(32))
    partner_type: Mapped[str] = mapped_column(String(32))
    event_date: Mapped[dt.date] = mapped_column(Date)
    creditor_type: Mapped[str | None] = mapped_column(String(32))
    amount_band: Mapped[str | None] = mapped_column(String(32))

    alert: Mapped[Alert] = relationship(back_populates="contributions")
