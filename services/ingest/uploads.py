"""Monthly CSV files: spooled encrypted to disk, then read row by row in the background.

The request body goes to a spool file as it arrives, sealed in frames with AES-GCM under
a key that exists only in this process's memory: a file left behind by a crash is
unreadable, and its upload is reported `interrupted` (send it again; rows already accepted
are recognised by their partner_event_id). Reading decrypts one frame at a time and hands
the CSV reader one line at a time, so memory stays flat whatever the file's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import re
import struct
import tempfile
import uuid
from collections.abc import AsyncIterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.contextvars import bound_contextvars

from services.ingest import metrics
from services.ingest.csvfile import CsvReader, CsvRow
from services.ingest.intake import Intake, Problem, Refused, count_invalid
from services.ingest.models import MODELS, PartnerEvent
from services.ingest.registry import RegisteredPartner
from services.ingest.settings import IngestSettings
from services.shared.db.models import Upload, UploadProblem
from services.shared.events import EventType
from services.shared.logging import get_logger

log = get_logger("hub.ingest.uploads")
_FRAME = struct.Struct(">I")
#: An upload `queued` or `processing` that gave no sign of life for this long has lost its
#: instance (a crash or a kill): it is reported, and marked at the next start, `interrupted`.
#: Processing touches the upload every chunk of rows, waiting every HEARTBEAT.
STALE_AFTER = dt.timedelta(minutes=5)
HEARTBEAT = dt.timedelta(minutes=1)
_UNDER_WAY = ("queued", "processing")


class TooLarge(Exception):
    """The body passed the upload size limit while it was being received."""


@dataclass
class Spool:
    """One upload's encrypted spool file and the digest of what was written into it."""

    path: Path
    size: int = 0
    sha256: bytes = b""
    _key: bytes = field(default_factory=lambda: AESGCM.generate_key(bit_length=256), repr=False)

    @classmethod
    async def receive(cls, directory: Path | None, body: AsyncIterable[bytes], limit: int) -> Spool:
        """Writes the body as it arrives; raises TooLarge (and leaves no file) past `limit`."""
        handle, name = tempfile.mkstemp(prefix="upload-", suffix=".spool", dir=directory)
        spool = cls(Path(name))
        aead = AESGCM(spool._key)
        digest = hashlib.sha256()
        try:
            with os.fdopen(handle, "wb") as out:
                counter = 0
                async for chunk in body:
                    if not chunk:
                        continue
                    spool.size += len(chunk)
                    if spool.size > limit:
                        raise TooLarge
                    digest.update(chunk)
                    sealed = aead.encrypt(counter.to_bytes(12, "big"), chunk, None)
                    out.write(_FRAME.pack(len(sealed)) + sealed)
                    counter += 1
        except BaseException:
            spool.discard()
            raise
        spool.sha256 = digest.digest()
        return spool

    def lines(self) -> Iterator[bytes]:
        """The file's lines as bytes, each with its line ending, decrypted frame by frame.
        Raises LineTooLong at a line longer than MAX_LINE_BYTES: it is never held whole."""
        aead = AESGCM(self._key)
        rest = b""
        number = 0  # lines yielded
        with self.path.open("rb") as spooled:
            counter = 0
            while header := spooled.read(_FRAME.size):
                (length,) = _FRAME.unpack(header)
                chunk = aead.decrypt(counter.to_bytes(12, "big"), spooled.read(length), None)
                counter += 1
                start = 0
                data = rest + chunk
                while (end := data.find(b"\n", start)) != -1:
                    if end - start > MAX_LINE_BYTES:  # the line, without its ending
                        raise LineTooLong(number + 1)
                    yield data[start : end + 1]
                    number += 1
                    start = end + 1
                rest = data[start:]
                if len(rest) > MAX_LINE_BYTES:
                    raise LineTooLong(number + 1)
        if rest:
            yield rest

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


#: The longest line a file may have; csv reads a field of at most 128 KiB anyway. A file
#: whose lines end in CR alone (old Mac) is one line to the hub, refused by this limit.
MAX_LINE_BYTES = 2**20


class LineTooLong(Exception):
    """A line of the file runs on past MAX_LINE_BYTES without a line end."""

    def __init__(self, line: int) -> None:
        super().__init__(
            f"line {line} is longer than {MAX_LINE_BYTES // 2**20} MiB without a line end; "
            "lines must end in LF or CRLF"
        )
        self.line = line


def new_upload_id() -> str:
    return str(uuid.uuid4())


def spool_directory(settings: IngestSettings) -> Path | None:
    directory = settings.ingest_upload_dir
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory


#: Spool files older than this belong to no live upload (a crash left them): unreadable
#: without their key, they only take disk space.
SPOOL_LEFTOVER_AFTER = dt.timedelta(days=1)


def remove_leftover_spools(directory: Path | None) -> int:
    """Deletes spool files a crashed instance left behind; returns how many."""
    cutoff = (dt.datetime.now(dt.UTC) - SPOOL_LEFTOVER_AFTER).timestamp()
    removed = 0
    for path in Path(directory or tempfile.gettempdir()).glob("upload-*.spool"):
        with contextlib.suppress(FileNotFoundError):  # another instance got there first
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


class Uploads:
    """Processes accepted uploads in the background, a few at a time, and reports on them."""

    def __init__(
        self,
        settings: IngestSettings,
        sessions: async_sessionmaker[AsyncSession],
        intake: Intake,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._intake = intake
        self._turns = asyncio.Semaphore(settings.ingest_uploads_parallel)
        self._running: set[asyncio.Task[None]] = set()

    async def start(
        self, upload_id: str, event_type: EventType, partner: RegisteredPartner, spool: Spool
    ) -> None:
        """Records the upload and starts processing it; the caller has checked the header."""
        async with self._sessions() as session, session.begin():
            session.add(
                Upload(
                    upload_id=upload_id,
                    partner_id=partner.partner_id,
                    event_type=event_type.value,
                    status="queued",
                    size_bytes=spool.size,
                )
            )
        with bound_contextvars(correlation_id=upload_id):  # the task's log lines carry it
            task = asyncio.create_task(self._process(upload_id, event_type, partner, spool))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def stop(self) -> None:
        """Interrupts what is still running (shutdown); those uploads are marked so."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    async def mark_abandoned(self) -> int:
        """Marks uploads whose instance went away mid-way `interrupted` (at start-up)."""
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(Upload)
                .where(
                    Upload.status.in_(_UNDER_WAY),
                    Upload.updated_at < dt.datetime.now(dt.UTC) - STALE_AFTER,
                )
                .values(
                    status="interrupted", failure=_INTERRUPTED, finished_at=dt.datetime.now(dt.UTC)
                )
                .returning(Upload.upload_id)
            )
            return len(result.all())

    async def _process(
        self, upload_id: str, event_type: EventType, partner: RegisteredPartner, spool: Spool
    ) -> None:
        status: str = "failed"
        failure: str | None = "processing failed; send the file again"
        try:
            await self._wait_for_turn(upload_id)
            metrics.UPLOADS_ACTIVE.inc()
            try:
                await self._read(upload_id, event_type, partner, spool)
                status, failure = "done", None
            finally:
                metrics.UPLOADS_ACTIVE.dec()
                self._turns.release()
        except asyncio.CancelledError:
            status, failure = "interrupted", _INTERRUPTED
            raise
        except LineTooLong as exc:  # the rows before it are in
            failure = f"{exc}; the rows before it are in, send the file again once fixed"
        except Exception:  # Kafka or PostgreSQL failed mid-file: the upload says so
            log.exception("upload.failed", upload_id=upload_id, event_type=event_type.value)
        finally:
            spool.discard()
            metrics.UPLOADS.labels(event_type.value, status).inc()
            await asyncio.shield(self._finish(upload_id, status, failure))
            log.info("upload.finished", upload_id=upload_id, status=status)

    async def _wait_for_turn(self, upload_id: str) -> None:
        """Waits for a free turn, saying every HEARTBEAT that the upload is still queued."""
        while True:
            try:
                await asyncio.wait_for(self._turns.acquire(), HEARTBEAT.total_seconds())
                break
            except TimeoutError:
                await self._touch(upload_id, "queued")
        try:
            await self._touch(upload_id, "processing")
        except BaseException:
            self._turns.release()
            raise

    async def _touch(self, upload_id: str, status: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Upload)
                .where(Upload.upload_id == upload_id)
                .values(status=status, updated_at=dt.datetime.now(dt.UTC))
            )

    async def _read(
        self, upload_id: str, event_type: EventType, partner: RegisteredPartner, spool: Spool
    ) -> None:
        chunk: list[CsvRow] = []
        try:
            for row in CsvReader(event_type, spool.lines()):
                chunk.append(row)
                if len(chunk) == self._settings.ingest_upload_chunk_rows:
                    await self._admit(upload_id, event_type, partner, chunk)
                    chunk = []
        except LineTooLong:
            # The rows read before a line too long to read are whole: they go in.
            if chunk:
                await self._admit(upload_id, event_type, partner, chunk)
            raise
        if chunk:
            await self._admit(upload_id, event_type, partner, chunk)

    async def _admit(
        self,
        upload_id: str,
        event_type: EventType,
        partner: RegisteredPartner,
        rows: list[CsvRow],
    ) -> None:
        model = MODELS[event_type]
        problems: list[tuple[int, Problem]] = []
        valid: list[tuple[int, PartnerEvent]] = []
        for row in rows:
            if row.data is None:
                problems.extend((row.line, Problem(p.field, p.message)) for p in row.problems)
                continue
            try:
                valid.append((row.line, model.model_validate(row.data)))
            except ValidationError as exc:
                problems.extend((row.line, p) for p in problems_of(exc, whole="row"))
        outcomes = await self._intake.admit(
            event_type, partner, [event for _, event in valid], "upload", upload_id
        )
        accepted = duplicate = 0
        for (line, _), outcome in zip(valid, outcomes, strict=True):
            if isinstance(outcome, Refused):
                problems.extend((line, p) for p in outcome.problems)
            elif outcome.duplicate:
                duplicate += 1
            else:
                accepted += 1
        rejected = len(rows) - accepted - duplicate
        invalid = rejected - sum(1 for o in outcomes if isinstance(o, Refused))
        async with self._sessions() as session, session.begin():
            if problems:
                await session.execute(
                    insert(UploadProblem),
                    [
                        {
                            "upload_id": upload_id,
                            "line": line,
                            "field": p.field[:120],
                            "message": p.message[:300],
                        }
                        for line, p in problems
                    ],
                )
            await session.execute(
                update(Upload)
                .where(Upload.upload_id == upload_id)
                .values(
                    rows_read=Upload.rows_read + len(rows),
                    rows_accepted=Upload.rows_accepted + accepted,
                    rows_duplicate=Upload.rows_duplicate + duplicate,
                    rows_rejected=Upload.rows_rejected + rejected,
                    updated_at=dt.datetime.now(dt.UTC),
                )
            )
        # Counted once their problems are stored, as `Intake.admit` counts the others.
        count_invalid(event_type, partner, "upload", invalid)

    async def _finish(self, upload_id: str, status: str, failure: str | None) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Upload)
                .where(Upload.upload_id == upload_id)
                .values(
                    status=status,
                    failure=failure,
                    updated_at=dt.datetime.now(dt.UTC),
                    finished_at=dt.datetime.now(dt.UTC),
                )
            )

    async def report(
        self, upload_id: str, partner_id: str, after_line: int, limit: int
    ) -> dict[str, Any] | None:
        """Progress and problems (from `after_line`, at most `limit`); None when the upload
        is unknown or another partner's."""
        async with self._sessions() as session:
            upload = await session.get(Upload, upload_id)
            if upload is None or upload.partner_id != partner_id:
                return None
            found = (
                await session.scalars(
                    select(UploadProblem)
                    .where(UploadProblem.upload_id == upload_id, UploadProblem.line > after_line)
                    .order_by(UploadProblem.line, UploadProblem.problem_id)
                    .limit(limit + 1)
                )
            ).all()
        status = upload.status
        if status in _UNDER_WAY and upload.updated_at < dt.datetime.now(dt.UTC) - STALE_AFTER:
            status = "interrupted"
        more = len(found) > limit
        # Never cut one line's problems in two: the next page starts at the next line.
        shown = list(found[:limit])
        if more and shown:
            last = shown[-1].line
            if found[limit].line == last:
                shown = [p for p in shown if p.line != last] or shown
        return {
            "upload_id": upload.upload_id,
            "event_type": upload.event_type,
            "status": status,
            "failure": upload.failure if status != "interrupted" else _INTERRUPTED,
            "size_bytes": upload.size_bytes,
            "rows": {
                "read": upload.rows_read,
                "accepted": upload.rows_accepted,
                "duplicate": upload.rows_duplicate,
                "rejected": upload.rows_rejected,
            },
            "received_at": upload.created_at.isoformat(),
            "finished_at": upload.finished_at.isoformat() if upload.finished_at else None,
            "problems": [{"line": p.line, "field": p.field, "message": p.message} for p in shown],
            "next_after_line": shown[-1].line if more and shown else None,
        }


_INTERRUPTED = "processing stopped before the end (restart); send the file again"


#: A field name as a partner's system would write one; an unknown name of another shape (a
#: key with spaces, digits first, ...) may be data put in the wrong place and is not echoed.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def problems_of(exc: ValidationError, whole: str = "body") -> list[Problem]:
    """pydantic's errors as field paths and messages; its `input` would echo identity data.
    `whole` names a fault of the event as a whole."""
    problems = []
    for error in exc.errors():
        loc, message = tuple(error["loc"]), error["msg"]
        if error["type"] == "extra_forbidden" and not _PLAIN_NAME.fullmatch(str(loc[-1])):
            loc = loc[:-1]
            message = "holds a field this type does not have (its name is not repeated here)"
        problems.append(Problem(field_path(loc, whole), message))
    return problems


def field_path(loc: tuple[Any, ...], whole: str = "body") -> str:
    # FastAPI puts "body" before the path of a field in the request body; a field may be
    # called "body" too (an unknown one), so only the leading one goes.
    if loc[:1] == ("body",):
        loc = loc[1:]
    return ".".join(str(p) for p in loc) or whole
