"""The ingest HTTP API: `POST /v1/events/{type}` validates, pseudonymises and publishes.

This module does not use `from __future__ import annotations`: the endpoints are made per
event type and FastAPI reads their annotations at run time.
"""

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, cast

from aiokafka import AIOKafkaProducer
from cachetools import TTLCache
from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.ingest import metrics
from services.ingest.models import MODELS, PartnerEvent
from services.ingest.records import build_record, contact_details
from services.ingest.registry import RegisteredPartner, authenticate
from services.ingest.settings import IngestSettings
from services.shared.avro import AvroCodec
from services.shared.crypto import Vault
from services.shared.db.contacts import store_contact
from services.shared.db.engine import make_engine, make_sessionmaker
from services.shared.events import FAMILIES, EventType
from services.shared.http import operations_router
from services.shared.identity import Pseudonymiser
from services.shared.kafka import make_producer
from services.shared.logging import get_logger
from services.shared.region import AMSTERDAM
from services.shared.tokens import token_digest
from services.shared.topics import source_topic

log = get_logger("hub.ingest")
_bearer = HTTPBearer(auto_error=False)
_TYPE_NAMES = frozenset(t.value for t in EventType)


class Accepted(BaseModel):
    event_id: str


class FieldProblem(BaseModel):
    field: str
    message: str


class Rejected(BaseModel):
    errors: list[FieldProblem]


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def create_app(settings: IngestSettings) -> FastAPI:
    codec = AvroCodec(settings.schemas_dir)
    pseudonyms = Pseudonymiser(settings)
    producer_box: dict[str, AIOKafkaProducer] = {}
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    vault = Vault(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = make_producer(settings)
        await producer.start()
        producer_box["producer"] = producer
        log.info("ingest.started", kafka=settings.kafka_bootstrap)
        try:
            yield
        finally:
            await producer.stop()
            await engine.dispose()

    app = FastAPI(
        title="Twente hub ingest",
        version="1",
        lifespan=lifespan,
        responses={422: {"model": Rejected, "description": "Bad input; nothing was published"}},
    )

    @app.exception_handler(RequestValidationError)
    async def _rejected(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Answer with field paths and messages only: pydantic's `input` would echo identity data.
        segment = request.url.path.removeprefix("/v1/events/").split("/")[0]
        event_type = segment if segment in _TYPE_NAMES else "other"
        metrics.EVENTS_REJECTED.labels(event_type, "invalid").inc()
        problems = [
            FieldProblem(field=_field_path(tuple(e["loc"])), message=e["msg"]).model_dump()
            for e in exc.errors()
        ]
        return JSONResponse({"errors": problems}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    # Key digest -> the partner holding it (or None: refused), for ingest_key_cache_s seconds.
    known: TTLCache[bytes, RegisteredPartner | None] = TTLCache(
        maxsize=10_000,
        ttl=settings.ingest_key_cache_s or 1.0,  # unused when 0
    )

    async def authenticated(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> RegisteredPartner:
        partner = None
        if credentials is not None:
            digest = token_digest(credentials.credentials)
            if digest in known:
                partner = known[digest]
            else:
                async with sessions() as session:
                    partner = await authenticate(session, credentials.credentials)
                if settings.ingest_key_cache_s:
                    known[digest] = partner
        if partner is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or unknown API key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return partner

    async def readiness() -> dict[str, str]:
        problems: dict[str, str] = {}
        producer = producer_box.get("producer")
        if producer is None:
            problems["kafka"] = "producer not started"
        else:
            try:
                await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout=2)
            except Exception as exc:  # any failure to reach the broker means not ready
                problems["kafka"] = type(exc).__name__
        try:
            async with sessions() as session:
                await asyncio.wait_for(session.execute(text("select 1")), timeout=2)
        except Exception as exc:  # any failure to reach the database means not ready
            problems["postgres"] = type(exc).__name__
        return problems

    app.include_router(operations_router(metrics.REGISTRY, readiness))

    for event_type in EventType:
        _add_event_route(
            app,
            _Publisher(event_type, codec, pseudonyms, settings, producer_box, sessions, vault),
            authenticated,
        )
    return app


class _Publisher:
    """Stores one accepted event's contact details encrypted, then publishes its record.

    Details first: if publishing then fails the partner gets an error and sends again, and
    the stored details (keyed by event id) are simply found again. The reverse order could
    leave an alert whose household has no contact details.
    """

    def __init__(
        self,
        event_type: EventType,
        codec: AvroCodec,
        pseudonyms: Pseudonymiser,
        settings: IngestSettings,
        producer_box: dict[str, AIOKafkaProducer],
        sessions: async_sessionmaker,  # type: ignore[type-arg]
        vault: Vault,
    ) -> None:
        self.event_type = event_type
        self.family = FAMILIES[event_type]
        self.topic = source_topic(settings, event_type)
        self._codec = codec
        self._pseudonyms = pseudonyms
        self._producer_box = producer_box
        self._sessions = sessions
        self._vault = vault
        self._tolerance_days = settings.future_tolerance_days

    def beyond_tolerance(self, event: PartnerEvent) -> dict[str, str] | None:
        """An event dated further in the future than the tolerance, as the matcher would
        refuse it: refused here, with the field, before anything is stored or published."""
        day: dt.date = getattr(event, self.family.time_field)
        today = dt.datetime.now(AMSTERDAM).date()
        ahead = (day - today).days
        if ahead <= self._tolerance_days:
            return None
        return {
            "field": self.family.time_field,
            "message": f"lies {ahead} days after today; at most {self._tolerance_days} allowed",
        }

    async def __call__(self, event: PartnerEvent, partner: RegisteredPartner) -> str:
        record = build_record(
            event,
            partner.partner_id,
            partner.partner_type,
            self._pseudonyms,
            dt.datetime.now(dt.UTC),
        )
        household: str = record["household_id"]
        async with self._sessions() as session, session.begin():
            await store_contact(
                session,
                self._vault,
                household_id=household,
                event_id=record["event_id"],
                event_type=self.event_type.value,
                domain=self.family.domain.value,
                event_date=record[self.family.time_field],
                details=contact_details(event),
            )
        payload = self._codec.encode(self.family.schema_name, record)
        await self._producer_box["producer"].send_and_wait(
            self.topic, payload, key=household.encode()
        )
        return str(record["event_id"])


def _add_event_route(app: FastAPI, publisher: _Publisher, authenticated: Any) -> None:
    event_type = publisher.event_type
    model = MODELS[event_type]

    async def publish(
        body: model,  # type: ignore[valid-type]
        partner: Annotated[RegisteredPartner, Depends(authenticated)],
    ) -> JSONResponse:
        event = cast(PartnerEvent, body)  # FastAPI validated it as this type's model
        if event_type not in partner.event_types:
            metrics.EVENTS_REJECTED.labels(event_type.value, "forbidden-type").inc()
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"partner may not publish {event_type.value} events"
            )
        if event.resident.bsn is not None and not partner.may_send_bsn:
            metrics.EVENTS_REJECTED.labels(event_type.value, "bsn-not-allowed").inc()
            return JSONResponse(
                {
                    "errors": [
                        {"field": "resident.bsn", "message": "this partner may not send a BSN"}
                    ]
                },
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            )
        too_late = publisher.beyond_tolerance(event)
        if too_late is not None:
            metrics.EVENTS_REJECTED.labels(event_type.value, "future-date").inc()
            return JSONResponse(
                {"errors": [too_late]},
                status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            )
        event_id = await publisher(event, partner)
        metrics.EVENTS_ACCEPTED.labels(event_type.value, partner.partner_type).inc()
        return JSONResponse({"event_id": event_id}, status_code=status.HTTP_202_ACCEPTED)

    app.add_api_route(
        f"/v1/events/{event_type.value}",
        publish,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Accepted,
        name=f"publish_{event_type.name.lower()}",
        summary=f"Publish one {event_type.value} event",
        tags=["events"],
    )
