"""The team API: `GET /v1/alerts` and `GET /v1/alerts/{id}`."""

import asyncio
import datetime as dt
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, text

from services.notifier import metrics
from services.notifier.consumer import AlertConsumer
from services.notifier.settings import NotifierSettings
from services.shared.avro import AvroCodec
from services.shared.db.engine import make_engine, make_sessionmaker
from services.shared.db.models import Alert
from services.shared.http import operations_router
from services.shared.kafka import make_producer
from services.shared.logging import get_logger

log = get_logger("hub.notifier")
_bearer = HTTPBearer(auto_error=False)


class ContributionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    event_id: str
    event_type: str
    domain: str
    partner_type: str
    event_date: dt.date
    creditor_type: str | None
    amount_band: str | None


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    alert_id: str
    household_id: str
    municipality_code: str
    wijk_code: str | None
    rule_id: str
    rule_version: int
    episode: int
    version: int
    status: str
    priority: str
    purpose: str
    legal_basis: str
    raised_on: dt.date
    deadline: dt.date
    deadline_rule: str
    domains: list[str]
    explanation: str
    contributions: list[ContributionOut]


class AlertPage(BaseModel):
    total: int
    alerts: list[AlertOut]


def create_app(settings: NotifierSettings) -> FastAPI:
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    state: dict[str, AlertConsumer] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = make_producer(settings)
        await producer.start()
        consumer = AlertConsumer(settings, AvroCodec(settings.schemas_dir), sessions, producer)
        state["consumer"] = consumer
        task = asyncio.create_task(consumer.run(), name="alert-consumer")
        task.add_done_callback(_crash_loudly)
        log.info("notifier.started", kafka=settings.kafka_bootstrap)
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            await producer.stop()
            await engine.dispose()

    app = FastAPI(title="Twente hub team API", version="1", lifespan=lifespan)

    async def team_member(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        expected = settings.notifier_api_token.get_secret_value().encode()
        if credentials is None or not hmac.compare_digest(
            credentials.credentials.encode(), expected
        ):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or unknown token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def readiness() -> dict[str, str]:
        problems: dict[str, str] = {}
        try:
            async with sessions() as session:
                await asyncio.wait_for(session.execute(text("select 1")), timeout=2)
        except Exception as exc:  # any failure to reach the database means not ready
            problems["postgres"] = type(exc).__name__
        consumer = state.get("consumer")
        if consumer is None or not consumer.started.is_set():
            problems["kafka"] = "alert consumer not started"
        return problems

    app.include_router(operations_router(metrics.REGISTRY, readiness))

    @app.get("/v1/alerts", response_model=AlertPage, dependencies=[Depends(team_member)])
    async def list_alerts(
        municipality: Annotated[str | None, Query(pattern=r"^GM\d{4}$")] = None,
        rule: str | None = None,
        alert_status: Annotated[str | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> AlertPage:
        query = select(Alert)
        if municipality:
            query = query.where(Alert.municipality_code == municipality)
        if rule:
            query = query.where(Alert.rule_id == rule)
        if alert_status:
            query = query.where(Alert.status == alert_status)
        async with sessions() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.scalars(
                query.order_by(Alert.deadline, Alert.alert_id).limit(limit).offset(offset)
            )
            return AlertPage(total=total or 0, alerts=[AlertOut.model_validate(r) for r in rows])

    @app.get("/v1/alerts/{alert_id}", response_model=AlertOut, dependencies=[Depends(team_member)])
    async def get_alert(alert_id: str) -> AlertOut:
        async with sessions() as session:
            alert = await session.get(Alert, alert_id)
            if alert is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "no such alert")
            return AlertOut.model_validate(alert)

    return app


def _crash_loudly(task: "asyncio.Task[None]") -> None:
    """A consumer that died is a bug or lost infrastructure: stop the process, do not limp on."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("notifier.consumer_died", error=type(exc).__name__)
        import os
        import signal

        os.kill(os.getpid(), signal.SIGTERM)
