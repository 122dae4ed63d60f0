"""`Idempotency-Key` on batches and uploads: the first answer is kept and given again.

A key belongs to one partner and one route (`batch:debt-signal`, `upload:care-indication`).
Sent again with the same body, the stored answer comes back and nothing is done twice; with
another body, or while the first request is still being handled, the answer is 409.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.shared.db.models import IdempotencyKey

HEADER = "Idempotency-Key"
_VALID = re.compile(r"^[\x21-\x7e]{1,200}$")
#: A key taken this long ago without an answer is abandoned: its request died with its ingest
#: (or its answer could not be stored). A batch of 10,000 events takes seconds, an upload's
#: request only spools the file.
ABANDONED_AFTER = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class Stored:
    """The answer the first request with the key got."""

    status_code: int
    body: dict[str, Any]


class KeyProblem(Exception):
    """The key cannot be used for this request; `status_code` and `message` say why."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def check_key(key: str) -> str:
    if not _VALID.match(key):
        raise KeyProblem(422, "must be 1 to 200 visible ASCII characters")
    return key


async def claim(
    sessions: async_sessionmaker[AsyncSession],
    partner_id: str,
    key: str,
    route: str,
    request_sha256: bytes,
) -> Stored | None:
    """Takes the key for this request (None), or returns the answer it already got."""
    async with sessions() as session, session.begin():
        taken = await session.scalar(
            insert(IdempotencyKey)
            .values(partner_id=partner_id, key=key, route=route, request_sha256=request_sha256)
            .on_conflict_do_nothing()
            .returning(IdempotencyKey.key)
        )
        if taken is not None:
            return None
        first = await session.get(IdempotencyKey, (partner_id, key))
    if first is None:  # released by a failed first request in the meantime: try once more
        return await claim(sessions, partner_id, key, route, request_sha256)
    if first.route != route or first.request_sha256 != request_sha256:
        raise KeyProblem(409, "already used for another request; use a new key for new content")
    if first.status_code is None or first.response is None:
        # Abandoned (its ingest stopped, or could not store the answer): this request takes
        # the key over, by the database's clock. Doing the work again is safe: the receipts
        # answer its events as repeats.
        async with sessions() as session, session.begin():
            taken = await session.scalar(
                update(IdempotencyKey)
                .where(
                    IdempotencyKey.partner_id == partner_id,
                    IdempotencyKey.key == key,
                    IdempotencyKey.created_at == first.created_at,
                    IdempotencyKey.created_at < func.now() - ABANDONED_AFTER,
                    IdempotencyKey.status_code.is_(None),
                )
                .values(created_at=func.now())
                .returning(IdempotencyKey.key)
            )
        if taken is None:  # not abandoned yet, or another request took it over first
            raise KeyProblem(409, "the first request with this key is still being handled")
        return None
    return Stored(first.status_code, first.response)


async def keep(
    sessions: async_sessionmaker[AsyncSession],
    partner_id: str,
    key: str,
    answer: Stored,
) -> None:
    async with sessions() as session, session.begin():
        await session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.partner_id == partner_id, IdempotencyKey.key == key)
            .values(status_code=answer.status_code, response=answer.body)
        )


async def release(sessions: async_sessionmaker[AsyncSession], partner_id: str, key: str) -> None:
    """Frees the key of a request that failed before it had an answer, so a retry can run."""
    async with sessions() as session, session.begin():
        await session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.partner_id == partner_id, IdempotencyKey.key == key
            )
        )
