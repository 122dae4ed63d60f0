"""The ingest HTTP API: one event, batches and CSV uploads, each validated, pseudonymised and
published through `services.ingest.intake`; also runs the Kafka intake consumer.

This module does not use `from __future__ import annotations`: the endpoints are made per
event type and FastAPI reads their annotations at run time.
"""

import asyncio
import hashlib
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, cast

from cachetools import TTLCache
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.models import OpenAPI
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from pydantic import BaseModel, ValidationError
from sqlalchemy import text
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, bound_contextvars

from services.ingest import idempotency, metrics
from services.ingest.csvfile import CsvReader, CsvRefused
from services.ingest.intake import (
    Accepted,
    Intake,
    Outcome,
    Problem,
    Refused,
    count_invalid,
)
from services.ingest.kafka_intake import KafkaIntake
from services.ingest.lagwatch import watch_lag
from services.ingest.models import MODELS, PartnerEvent
from services.ingest.registry import ALLOWED_TYPES, RegisteredPartner, authenticate
from services.ingest.settings import IngestSettings
from services.ingest.uploads import (
    LineTooLong,
    Spool,
    TooLarge,
    Uploads,
    field_path,
    new_upload_id,
    problems_of,
    remove_leftover_spools,
    spool_directory,
)
from services.shared.avro import AvroCodec
from services.shared.correlation import HTTP_HEADER, correlation_id_or_new
from services.shared.crypto import Vault
from services.shared.db.engine import make_engine, make_sessionmaker
from services.shared.events import EventType
from services.shared.http import operations_router
from services.shared.identity import Pseudonymiser
from services.shared.kafka import make_producer
from services.shared.logging import get_logger
from services.shared.tokens import token_digest

log = get_logger("hub.ingest")
_bearer = HTTPBearer(auto_error=False)
_REPLAYED = {"Idempotent-Replayed": "true"}
#: What a refusal without a field of its own is about.
_FAULT = {
    400: "body",
    401: "Authorization",
    403: "event_type",
    404: "path",
    405: "method",
    429: "Authorization",
}


class Accepted202(BaseModel):
    event_id: str


class FieldProblem(BaseModel):
    field: str
    message: str


class Rejected(BaseModel):
    errors: list[FieldProblem]


#: What any partner request may be answered (not the probes: they take no key).
_PARTNER_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: {"model": Rejected, "description": "Missing, unknown, expired or disabled API key"},
    422: {"model": Rejected, "description": "Bad input; nothing was published"},
}
#: What a request that publishes may be answered besides.
_PUBLISH_ANSWERS: dict[int | str, dict[str, Any]] = {
    **_PARTNER_ANSWERS,
    403: {"model": Rejected, "description": "The partner may not publish this event type"},
    413: {"model": Rejected, "description": "Body or batch larger than allowed"},
    429: {"model": Rejected, "description": "Rate limit; see Retry-After"},
}


class BatchResult(BaseModel):
    index: int
    status: str  # accepted, duplicate or rejected
    event_id: str | None = None
    errors: list[FieldProblem] | None = None


class BatchReport(BaseModel):
    accepted: int
    duplicate: int
    rejected: int
    results: list[BatchResult]


class UploadAccepted(BaseModel):
    upload_id: str
    status: str
    status_url: str


class FieldRefusal(HTTPException):
    """A refusal that names the field at fault; answered as `{"errors": [...]}`."""

    def __init__(self, status_code: int, field: str, message: str) -> None:
        super().__init__(status_code, message)
        self.field = field


def _errors(*problems: Problem) -> dict[str, Any]:
    return {"errors": [p.as_json() for p in problems]}


def _refuse(status_code: int, field: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse(_errors(Problem(field, message)), status_code, headers=headers or None)


@dataclass
class _Runtime:
    """What exists only between start-up and shutdown."""

    intake: Intake
    uploads: Uploads
    kafka_intake: KafkaIntake | None


def create_app(settings: IngestSettings) -> FastAPI:
    codec = AvroCodec(settings.schemas_dir)
    pseudonyms = Pseudonymiser(settings)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    vault = Vault(settings)
    runtime: dict[str, _Runtime] = {}
    limits = parse_many(settings.ingest_rate_limit)
    limiter = MovingWindowRateLimiter(MemoryStorage())
    metrics.initialise(ALLOWED_TYPES)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = make_producer(settings)
        await producer.start()
        intake = Intake(settings, codec, pseudonyms, sessions, vault, producer)
        uploads = Uploads(settings, sessions, intake)
        abandoned = await uploads.mark_abandoned()
        leftovers = remove_leftover_spools(spool_directory(settings))
        kafka = None
        if settings.ingest_kafka_intake:
            kafka = KafkaIntake(settings, intake, sessions, producer)
            await kafka.start()
        runtime["now"] = _Runtime(intake, uploads, kafka)
        lag = asyncio.create_task(watch_lag(settings), name="consumer-lag")
        log.info(
            "ingest.started",
            kafka=settings.kafka_bootstrap,
            uploads_interrupted=abandoned,
            spools_removed=leftovers,
        )
        try:
            yield
        finally:
            lag.cancel()
            await asyncio.gather(lag, return_exceptions=True)
            if kafka is not None:
                await kafka.stop()
            await uploads.stop()
            await producer.stop()
            await engine.dispose()

    app = FastAPI(
        title="Twente hub ingest",
        version="1",
        lifespan=lifespan,
    )
    app.add_middleware(
        _BodyLimit,
        json_limit=settings.ingest_max_body_bytes,
        upload_limit=settings.ingest_max_upload_bytes,
    )
    # Outermost, so every answer (a 401 and a 413 too) carries the request's correlation id.
    app.add_middleware(_CorrelationId)

    @app.exception_handler(RequestValidationError)
    async def _rejected(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Answer with field paths and messages only: pydantic's `input` would echo identity data.
        # No route takes its event body from FastAPI (they read it after authentication, and
        # count what they refuse): this answers a bad query or header, which offers no event.
        problems = [
            FieldProblem(
                # Broken JSON has a character position where a field would be.
                field="body" if e["type"] == "json_invalid" else field_path(tuple(e["loc"])),
                message=e["msg"],
            ).model_dump()
            for e in exc.errors()
        ]
        return JSONResponse({"errors": problems}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    # Starlette's class: FastAPI raises it, not its own subclass, for a body it cannot read.
    @app.exception_handler(StarletteHTTPException)
    async def _refused(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Every refusal in one shape, naming what is at fault; `detail` as FastAPI has it.
        field = exc.field if isinstance(exc, FieldRefusal) else _FAULT.get(exc.status_code, "")
        body = {"detail": exc.detail, **_errors(Problem(field or "request", str(exc.detail)))}
        return JSONResponse(body, exc.status_code, headers=exc.headers)

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
            metrics.REQUESTS_REFUSED.labels("unauthenticated").inc()
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or unknown API key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return partner

    async def within_rate(
        partner: Annotated[RegisteredPartner, Depends(authenticated)],
    ) -> RegisteredPartner:
        for limit in limits:
            if not await limiter.hit(limit, partner.partner_id):
                metrics.REQUESTS_LIMITED.labels("rate").inc()
                stats = await limiter.get_window_stats(limit, partner.partner_id)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    f"over this partner's limit of {limit.amount} requests per "
                    f"{limit.multiples} {limit.GRANULARITY.name}; try again in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
        return partner

    async def readiness() -> dict[str, str]:
        problems: dict[str, str] = {}
        now = runtime.get("now")
        if now is None:
            problems["kafka"] = "producer not started"
        else:
            try:
                await asyncio.wait_for(now.intake.producer.client.fetch_all_metadata(), timeout=2)
            except Exception as exc:  # any failure to reach the broker means not ready
                problems["kafka"] = type(exc).__name__
            if now.kafka_intake is not None and not now.kafka_intake.running:
                problems["kafka-intake"] = "the intake consumer stopped; see the log"
        try:
            async with sessions() as session:
                await asyncio.wait_for(session.execute(text("select 1")), timeout=2)
        except Exception as exc:  # any failure to reach the database means not ready
            problems["postgres"] = type(exc).__name__
        return problems

    app.include_router(operations_router(metrics.REGISTRY, readiness))

    def intake() -> Intake:
        return runtime["now"].intake

    for event_type in EventType:
        _add_event_route(app, event_type, intake, within_rate)
        _add_batch_route(app, event_type, intake, within_rate, sessions, settings)
        _add_upload_route(
            app, event_type, lambda: runtime["now"].uploads, within_rate, sessions, settings
        )

    app.openapi = _with_event_schemas(app)  # type: ignore[method-assign]

    @app.get(
        "/v1/uploads/{upload_id}",
        tags=["uploads"],
        summary="Progress of an upload and its problems per row",
        responses={
            **_PARTNER_ANSWERS,
            404: {"model": Rejected, "description": "No such upload of this partner"},
        },
    )
    async def upload_report(
        upload_id: str,
        partner: Annotated[RegisteredPartner, Depends(authenticated)],
        after_line: Annotated[
            int, Query(ge=0, le=_LAST_LINE, description="Problems after this line")
        ] = 0,
        limit: Annotated[int, Query(ge=100, le=10_000, description="Most problems")] = 1000,
    ) -> JSONResponse:
        # Upload ids are UUIDs as new_upload_id writes them; anything else is none of them.
        report = (
            await runtime["now"].uploads.report(upload_id, partner.partner_id, after_line, limit)
            if _is_upload_id(upload_id)
            else None
        )
        if report is None:
            return _refuse(404, "upload_id", "no upload with this id from this partner")
        return JSONResponse(report)

    return app


def _permitted(event_type: EventType, partner_dep: Any) -> Any:
    """A dependency: the partner, if it may publish `event_type`; else 403. The routes read
    their bodies themselves, after this, so a forbidden type is refused first and counts no
    event offered (services.ingest.metrics)."""

    async def permitted(
        partner: Annotated[RegisteredPartner, Depends(partner_dep)],
    ) -> RegisteredPartner:
        if event_type not in partner.event_types:
            metrics.REQUESTS_REFUSED.labels("forbidden-type").inc()
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"partner may not publish {event_type.value} events"
            )
        return partner

    return permitted


#: The last line number the uploads' report stores (a PostgreSQL integer).
_LAST_LINE = 2**31 - 1


def _is_upload_id(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


class NotJson(Exception):
    """A body that is no JSON the hub reads."""


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    # Besides JSONDecodeError and UnicodeDecodeError (both ValueErrors): an integer of more
    # than 4,300 digits (ValueError) and arrays nested deeper than the parser's stack.
    except (ValueError, RecursionError) as exc:
        raise NotJson from exc


def _add_event_route(
    app: FastAPI, event_type: EventType, intake: Callable[[], Intake], partner_dep: Any
) -> None:
    model = MODELS[event_type]

    async def publish(
        request: Request,
        partner: Annotated[RegisteredPartner, Depends(_permitted(event_type, partner_dep))],
    ) -> JSONResponse:
        # Read here, not by FastAPI: it would parse the body before authenticating, answer
        # broken JSON of an unknown key 422 instead of 401, and count it nowhere.
        try:
            data = _json_body(await request.body())
        except NotJson:
            count_invalid(event_type, partner, "http")
            return _refuse(422, "body", "not JSON")
        try:
            event = model.model_validate(data)
        except ValidationError as exc:
            count_invalid(event_type, partner, "http")
            return JSONResponse(_errors(*problems_of(exc)), 422)
        (outcome,) = await intake().admit(
            event_type, partner, [event], "http", correlation_of(request)
        )
        if isinstance(outcome, Accepted):
            return JSONResponse(
                {"event_id": outcome.event_id},
                status_code=status.HTTP_202_ACCEPTED,
                headers=_REPLAYED if outcome.duplicate else None,
            )
        code = status.HTTP_409_CONFLICT if outcome.reason == "conflict" else 422
        return JSONResponse(_errors(*outcome.problems), status_code=code)

    app.add_api_route(
        f"/v1/events/{event_type.value}",
        publish,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=Accepted202,
        responses={
            **_PUBLISH_ANSWERS,
            409: {"model": Rejected, "description": "partner_event_id used for other content"},
        },
        openapi_extra=_event_schema(event_type),
        name=f"publish_{event_type.name.lower()}",
        summary=f"Publish one {event_type.value} event",
        description="A repeat of an accepted event gets the same answer, with header "
        "`Idempotent-Replayed: true`, and publishes nothing.",
        tags=["events"],
    )


IdempotencyHeader = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        description="Makes a retry safe: the same key with the same body gets the first answer.",
    ),
]


async def _idempotent(
    sessions: Any,
    partner: RegisteredPartner,
    key: str | None,
    route: str,
    digest: bytes,
    work: Callable[[], Awaitable[idempotency.Stored]],
    replayed: Callable[[idempotency.Stored], None] | None = None,
) -> JSONResponse:
    """Runs `work` once per key; a repeat gets the stored answer (`replayed` sees it first)."""
    if key is None:
        answer = await work()
        return JSONResponse(answer.body, answer.status_code)
    try:
        idempotency.check_key(key)
        stored = await idempotency.claim(sessions, partner.partner_id, key, route, digest)
    except idempotency.KeyProblem as problem:
        return _refuse(problem.status_code, idempotency.HEADER, problem.message)
    if stored is not None:
        if replayed is not None:
            replayed(stored)
        return JSONResponse(stored.body, stored.status_code, headers=_REPLAYED)
    try:
        answer = await work()
    except BaseException:
        await asyncio.shield(idempotency.release(sessions, partner.partner_id, key))
        raise
    if answer.status_code < 300:
        await idempotency.keep(sessions, partner.partner_id, key, answer)
    else:  # a refused request did nothing; the key stays free for the corrected one
        await idempotency.release(sessions, partner.partner_id, key)
    return JSONResponse(answer.body, answer.status_code)


_SCHEMA_REF = "#/components/schemas/{model}"


def _with_event_schemas(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """`app.openapi` with the event models in the components: no route takes them as a body
    parameter (they read their bodies themselves), so FastAPI would leave them out."""
    generated = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generated()
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for model in MODELS.values():
                schema = model.model_json_schema(ref_template=_SCHEMA_REF)
                components.update(schema.pop("$defs", {}))
                components[model.__name__] = schema
            # Through FastAPI's model of the document, as it writes its own parts.
            app.openapi_schema = jsonable_encoder(
                OpenAPI(**document), by_alias=True, exclude_none=True
            )
        return app.openapi_schema

    return openapi


def _event_schema(event_type: EventType) -> dict[str, Any]:
    ref = {"$ref": _SCHEMA_REF.format(model=MODELS[event_type].__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def _batch_schema(event_type: EventType, most: int) -> dict[str, Any]:
    ref = {"$ref": _SCHEMA_REF.format(model=MODELS[event_type].__name__)}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "array", "items": ref, "minItems": 1, "maxItems": most}
                }
            },
        }
    }


def _add_batch_route(
    app: FastAPI,
    event_type: EventType,
    intake: Callable[[], Intake],
    partner_dep: Any,
    sessions: Any,
    settings: IngestSettings,
) -> None:
    model = MODELS[event_type]
    most = settings.ingest_max_batch_events

    async def publish_batch(
        request: Request,
        partner: Annotated[RegisteredPartner, Depends(_permitted(event_type, partner_dep))],
        key: IdempotencyHeader = None,
    ) -> JSONResponse:
        body = await request.body()
        try:
            items = _json_body(body)
        except NotJson:
            return _refuse(422, "body", "not JSON")
        if not isinstance(items, list) or not items:
            return _refuse(422, "body", "must be a JSON array of at least one event")
        if len(items) > most:
            metrics.REQUESTS_LIMITED.labels("batch-size").inc()
            return _refuse(413, "body", f"holds {len(items)} events; at most {most} allowed")

        async def work() -> idempotency.Stored:
            report = await _admit_batch(
                intake(), event_type, partner, model, items, correlation_of(request)
            )
            return idempotency.Stored(200, report)

        digest = hashlib.sha256(body).digest()
        return await _idempotent(sessions, partner, key, f"batch:{event_type.value}", digest, work)

    app.add_api_route(
        f"/v1/events/{event_type.value}/batch",
        publish_batch,
        methods=["POST"],
        response_model=BatchReport,
        responses={
            **_PUBLISH_ANSWERS,
            409: {"model": Rejected, "description": "Idempotency-Key used for another body"},
        },
        openapi_extra=_batch_schema(event_type, most),
        name=f"publish_{event_type.name.lower()}_batch",
        summary=f"Publish up to {most} {event_type.value} events",
        description="Each event is accepted (and published) or rejected on its own; the "
        "answer lists the outcome per event, by index. A rejected event publishes nothing.",
        tags=["events"],
    )


async def _admit_batch(
    intake: Intake,
    event_type: EventType,
    partner: RegisteredPartner,
    model: type[PartnerEvent],
    items: list[Any],
    correlation_id: str,
) -> dict[str, Any]:
    outcomes: list[Outcome | None] = [None] * len(items)
    valid: list[tuple[int, PartnerEvent]] = []
    for index, item in enumerate(items):
        try:
            valid.append((index, model.model_validate(item)))
        except ValidationError as exc:
            outcomes[index] = Refused("invalid", tuple(problems_of(exc)))
    admitted = await intake.admit(
        event_type, partner, [e for _, e in valid], "batch", correlation_id
    )
    for (index, _), admission in zip(valid, admitted, strict=True):
        outcomes[index] = admission
    count_invalid(event_type, partner, "batch", len(items) - len(valid))
    results: list[dict[str, Any]] = []
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, Accepted):
            state = "duplicate" if outcome.duplicate else "accepted"
            results.append({"index": index, "status": state, "event_id": outcome.event_id})
        else:
            assert outcome is not None
            state = "rejected"
            results.append(
                {"index": index, "status": state, "errors": [p.as_json() for p in outcome.problems]}
            )
        counts[state] += 1
    return {**counts, "results": results}


def _add_upload_route(
    app: FastAPI,
    event_type: EventType,
    uploads: Callable[[], Uploads],
    partner_dep: Any,
    sessions: Any,
    settings: IngestSettings,
) -> None:
    async def upload(
        request: Request,
        partner: Annotated[RegisteredPartner, Depends(_permitted(event_type, partner_dep))],
        key: IdempotencyHeader = None,
    ) -> JSONResponse:
        try:
            spool = await Spool.receive(
                spool_directory(settings), request.stream(), settings.ingest_max_upload_bytes
            )
        except TooLarge:
            metrics.REQUESTS_LIMITED.labels("upload-size").inc()
            return _refuse(
                413, "body", f"file larger than {settings.ingest_max_upload_bytes} bytes"
            )
        try:
            CsvReader(event_type, spool.lines())
        except CsvRefused as refusal:
            spool.discard()
            return JSONResponse(
                _errors(*(Problem(p.field, p.message) for p in refusal.problems)), 422
            )
        except LineTooLong as too_long:
            spool.discard()
            return _refuse(422, "file", str(too_long))

        taken = False

        def traced_as(upload_id: str) -> None:
            # The upload's events and its answer carry the upload id as their correlation id.
            request.state.correlation_id = upload_id
            bind_contextvars(correlation_id=upload_id)  # the middleware's exit resets it

        async def work() -> idempotency.Stored:
            nonlocal taken
            upload_id = new_upload_id()
            traced_as(upload_id)
            await uploads().start(upload_id, event_type, partner, spool)
            taken = True
            body = {
                "upload_id": upload_id,
                "status": "queued",
                "status_url": f"/v1/uploads/{upload_id}",
            }
            return idempotency.Stored(202, body)

        digest = hashlib.sha256(spool.sha256 + event_type.value.encode()).digest()
        try:
            return await _idempotent(
                sessions,
                partner,
                key,
                f"upload:{event_type.value}",
                digest,
                work,
                # A repeat is answered as the first: with the upload id its events carry.
                replayed=lambda stored: traced_as(str(stored.body["upload_id"])),
            )
        finally:
            if not taken:  # a repeat, a refused key or a failure: no upload reads the spool
                spool.discard()

    app.add_api_route(
        f"/v1/uploads/{event_type.value}",
        upload,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=UploadAccepted,
        responses={
            **_PUBLISH_ANSWERS,
            409: {"model": Rejected, "description": "Idempotency-Key used for another file"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "text/csv": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
        name=f"upload_{event_type.name.lower()}",
        summary=f"Upload a CSV file of {event_type.value} events",
        description="The file is checked (header) and then processed in the background; "
        "follow `status_url` for progress and the problems per line. Columns: docs/uploads.md.",
        tags=["uploads"],
    )


def correlation_of(request: Request) -> str:
    """The request's correlation id, as `_CorrelationId` chose it."""
    return cast(str, request.state.correlation_id)


class _CorrelationId:
    """Gives each request its correlation id: the partner's `X-Correlation-Id` when valid,
    else a new one; binds it to every log line of the request and answers it in the same
    header. A route may replace it (an upload's is its upload id)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HTTP_HEADER.lower().encode())
        state = scope.setdefault("state", {})
        state["correlation_id"] = correlation_id_or_new(given)

        async def answered(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HTTP_HEADER] = state["correlation_id"]
            await send(message)

        with bound_contextvars(correlation_id=state["correlation_id"]):
            await self._app(scope, receive, answered)


class _BodyLimit:
    """Refuses a request body past its limit with 413: by Content-Length before reading, or
    while streaming when the length is not given. Uploads have their own, larger limit (the
    upload route counts while it spools)."""

    def __init__(self, app: ASGIApp, json_limit: int, upload_limit: int) -> None:
        self._app = app
        self._json_limit = json_limit
        self._upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            await self._app(scope, receive, send)
            return
        upload = scope["path"].startswith("/v1/uploads/")
        limit = self._upload_limit if upload else self._json_limit
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(send, limit, upload)
            return
        if upload:
            await self._app(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                metrics.REQUESTS_LIMITED.labels("body-size").inc()
                # FastAPI passes an HTTPException from reading the body on as it is.
                raise FieldRefusal(413, "body", f"larger than {limit} bytes")
            return message

        await self._app(scope, counted, send)

    async def _too_large(self, send: Send, limit: int, upload: bool) -> None:
        metrics.REQUESTS_LIMITED.labels("upload-size" if upload else "body-size").inc()
        response = _refuse(413, "body", f"larger than {limit} bytes")
        await response({"type": "http"}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
