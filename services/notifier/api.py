"""The notifier's web service: the team API, the inbox, and the background work (alert
consumer, delivery dispatcher, outcome publisher, overdue check).

Every response is cut to the team: only alerts routed to it with one of its purposes, only
the details of domains its purposes disclose (services/notifier/teamwork.py). Every view of
an alert, its contact details and its notes is written to the append-only access log; every
claim, outcome and note to `alert_actions`.
"""

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any, TypeVar

import httpx
from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from starlette.middleware.sessions import SessionMiddleware

from services.notifier import metrics
from services.notifier.consumer import AlertConsumer
from services.notifier.deadlines import keep_escalating
from services.notifier.delivery import Dispatcher
from services.notifier.directory import Member, authenticate
from services.notifier.inbox import inbox_router
from services.notifier.outcomes import Conflict, OutcomePublisher
from services.notifier.settings import NotifierSettings
from services.notifier.teamwork import (
    DetailsRemoved,
    InvalidNote,
    NotFound,
    NotYours,
    Teamwork,
)
from services.shared.avro import AvroCodec
from services.shared.crypto import Vault
from services.shared.db.engine import make_engine, make_sessionmaker
from services.shared.http import operations_router
from services.shared.kafka import make_producer
from services.shared.logging import get_logger
from services.shared.outcomes import KnownOutcome

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
    alert_id: str
    household_id: str
    municipality_code: str
    wijk_code: str | None
    rule_id: str
    rule_version: int
    #: The rule's name for the worker ("Twente-match").
    rule_title: str
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
    #: The rule's condition that held, in Dutch.
    condition: str
    #: Why the alert was raised, in Dutch, for the worker.
    explanation: str
    contributions: list[ContributionOut]
    #: The member who took it on, when and with what outcome it was closed.
    claimed_by: str | None = None
    outcome: str | None = None
    closed_at: dt.datetime | None = None
    #: Open with its deadline passed (the notifier escalated it); listed first.
    overdue: bool = False
    #: Domains involved that this team's purposes do not disclose (0 when the rule hides them).
    other_domains_involved: int
    personal_details_removed: bool


class OutcomeIn(BaseModel):
    outcome: KnownOutcome = Field(description="One of the fixed outcomes (docs/rules.md).")


class NoteIn(BaseModel):
    text: str = Field(
        min_length=1, max_length=2000, description="A working note; stored encrypted."
    )


class HistoryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: dt.datetime
    member_id: str
    team_id: str
    action: str
    outcome: str | None
    #: A note's text; null when the household's details were shredded.
    text: str | None


class AlertPage(BaseModel):
    total: int
    alerts: list[AlertOut]


class ContactOut(BaseModel):
    event_type: str
    domain: str
    event_date: dt.date
    name: str
    birth_date: dt.date
    phone: str | None
    street: str
    house_number: int
    house_letter: str | None
    house_number_addition: str | None
    postcode: str
    city: str


class ContactPage(BaseModel):
    alert_id: str
    purpose: str
    domains_shown: list[str]
    contacts: list[ContactOut]


T = TypeVar("T")


async def _answer(work: Awaitable[T]) -> T:
    """Team work's refusals as HTTP answers."""
    try:
        return await work
    except NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except NotYours as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except DetailsRemoved as exc:
        raise HTTPException(status.HTTP_410_GONE, str(exc)) from None
    except Conflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except InvalidNote as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


def create_app(settings: NotifierSettings) -> FastAPI:
    # Each delivery in flight takes a connection now and then (never across a wait).
    engine = make_engine(settings, pool_size=settings.delivery_concurrency + 5)
    sessions = make_sessionmaker(engine)
    vault = Vault(settings)
    codec = AvroCodec(settings.schemas_dir)
    state: dict[str, Any] = {}
    metrics.initialise()
    teamwork = Teamwork(sessions, vault, on_outcome=lambda: state["outbox"].wake())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = make_producer(settings)
        await producer.start()
        client = httpx.AsyncClient(follow_redirects=False)
        dispatcher = Dispatcher(sessions, vault, settings, client)
        consumer = AlertConsumer(settings, codec, sessions, producer, on_queued=dispatcher.wake)
        state["consumer"] = consumer
        task = asyncio.create_task(consumer.run(), name="alert-consumer")
        task.add_done_callback(_crash_loudly)
        outbox = OutcomePublisher(sessions, producer, codec, settings)
        state["outbox"] = outbox
        publisher = asyncio.create_task(outbox.run(), name="outcome-publisher")
        deadlines = asyncio.create_task(
            keep_escalating(sessions, settings.notifier_overdue_check_s, dispatcher.wake),
            name="overdue-check",
        )
        delivering = asyncio.create_task(dispatcher.run(), name="dispatcher")
        delivering.add_done_callback(_crash_loudly)
        log.info("notifier.started", kafka=settings.kafka_bootstrap)
        try:
            yield
        finally:
            for running in (task, publisher, deadlines, delivering):
                running.cancel()
                with suppress(asyncio.CancelledError):
                    await running
            await client.aclose()
            await producer.stop()
            await engine.dispose()

    app = FastAPI(title="Twente hub team API", version="1", lifespan=lifespan)
    # The inbox's login: a signed cookie (itsdangerous) holding the member id, never the token.
    app.add_middleware(
        SessionMiddleware,
        secret_key=(
            settings.notifier_session_secret.get_secret_value()
            if settings.notifier_session_secret
            else secrets.token_urlsafe(32)
        ),
        session_cookie="hub_inbox",
        max_age=round(settings.notifier_session_hours * 3600),
        same_site="strict",
        https_only=settings.notifier_public_url.startswith("https://"),
    )

    async def team_member(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Member:
        member = None
        if credentials is not None:
            async with sessions() as session:
                member = await authenticate(session, credentials.credentials)
        if member is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or unknown token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return member

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
    app.include_router(inbox_router(settings, teamwork, sessions))

    @app.get("/v1/alerts", response_model=AlertPage)
    async def list_alerts(
        member: Annotated[Member, Depends(team_member)],
        municipality: Annotated[str | None, Query(pattern=r"^GM\d{4}$")] = None,
        rule: str | None = None,
        alert_status: Annotated[str | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> AlertPage:
        """The team's alerts, open ones first by deadline (so the overdue ones lead)."""
        total, alerts = await teamwork.list_alerts(
            member,
            status=alert_status,
            municipality=municipality,
            rule=rule,
            limit=limit,
            offset=offset,
        )
        return AlertPage(total=total, alerts=[AlertOut.model_validate(a) for a in alerts])

    @app.get("/v1/alerts/{alert_id}", response_model=AlertOut)
    async def get_alert(alert_id: str, member: Annotated[Member, Depends(team_member)]) -> AlertOut:
        return AlertOut.model_validate(await _answer(teamwork.open_alert(member, alert_id)))

    @app.get(
        "/v1/alerts/{alert_id}/contact",
        response_model=ContactPage,
        responses={410: {"description": "the alert's personal details were removed"}},
    )
    async def get_contact(
        alert_id: str, member: Annotated[Member, Depends(team_member)]
    ) -> ContactPage:
        """Decrypts the contact details of the events this team's purposes disclose."""
        alert, stored = await _answer(teamwork.contacts(member, alert_id))
        return ContactPage(
            alert_id=alert["alert_id"],
            purpose=alert["purpose"],
            domains_shown=sorted({c.domain for c in stored}),
            contacts=[
                ContactOut(
                    event_type=c.event_type,
                    domain=c.domain,
                    event_date=c.event_date,
                    **c.details.model_dump(),
                )
                for c in stored
            ],
        )

    @app.post(
        "/v1/alerts/{alert_id}/claim",
        response_model=AlertOut,
        responses={409: {"description": "closed, or claimed by another member"}},
    )
    async def claim_alert(
        alert_id: str, member: Annotated[Member, Depends(team_member)]
    ) -> AlertOut:
        """Take the alert on; claiming it again is harmless."""
        return AlertOut.model_validate(await _answer(teamwork.claim(member, alert_id)))

    @app.post(
        "/v1/alerts/{alert_id}/outcome",
        response_model=AlertOut,
        responses={409: {"description": "the alert was closed already"}},
    )
    async def record_outcome(
        alert_id: str, body: OutcomeIn, member: Annotated[Member, Depends(team_member)]
    ) -> AlertOut:
        """Close the alert with an outcome from the fixed list; the matcher hears of it."""
        view = await _answer(teamwork.record_outcome(member, alert_id, body.outcome))
        return AlertOut.model_validate(view)

    @app.post(
        "/v1/alerts/{alert_id}/notes",
        response_model=HistoryOut,
        status_code=status.HTTP_201_CREATED,
        responses={410: {"description": "the alert's personal details were removed"}},
    )
    async def add_note(
        alert_id: str, body: NoteIn, member: Annotated[Member, Depends(team_member)]
    ) -> HistoryOut:
        """A working note on the alert, for the team; stored encrypted (docs/notifier.md)."""
        entry = await _answer(teamwork.add_note(member, alert_id, body.text))
        return HistoryOut.model_validate(entry)

    @app.get("/v1/alerts/{alert_id}/history", response_model=list[HistoryOut])
    async def history(
        alert_id: str, member: Annotated[Member, Depends(team_member)]
    ) -> list[HistoryOut]:
        """Claims, outcomes and notes, with who and when; reading the notes is logged."""
        entries = await _answer(teamwork.history(member, alert_id))
        return [HistoryOut.model_validate(e) for e in entries]

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
