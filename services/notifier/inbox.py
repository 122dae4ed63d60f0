"""The team inbox: server-rendered pages over the same team work as the API (placeholder)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifier.settings import NotifierSettings
from services.notifier.teamwork import Teamwork


def inbox_router(
    settings: NotifierSettings,
    teamwork: Teamwork,
    sessions: async_sessionmaker[AsyncSession],
) -> APIRouter:
    return APIRouter()
