"""Async engine and sessions for the hub's database."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from services.shared.config import DatabaseSettings


def make_engine(settings: DatabaseSettings, **options: Any) -> AsyncEngine:
    return create_async_engine(
        settings.database_url.get_secret_value(), pool_pre_ping=True, **options
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    return async_sessionmaker(engine, expire_on_commit=False)
