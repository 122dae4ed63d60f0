"""The team API: alerts as a team's purposes allow it to see them, their contact details,
and a member's work on them: claiming an alert and closing it with an outcome.

Every response is cut to the team: only alerts of its municipalities and purposes, only the
details of domains its purposes disclose. Every view of an alert and of its contact details
is written to the append-only access log; every claim and outcome to `alert_actions`.
"""

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifier import metrics
from services.notifier.access import Member, present, team_directory
from services.notifier.consumer import AlertConsumer
from services.notifier.deadlines import keep_escalating
from services.notifier.outcomes import Conflict, OutcomePublisher, claim, close
from services.notifier.settings import NotifierSettings
from services.shared.avro import AvroCodec
from services.shared.crypto import Vault
from services.shared.db.contacts import open_contacts
from services.shared.db.engine import make_engine, make_sessionmaker
from services.shared.db.models import AccessLogEntry, Alert
from services.shared.errors import DecryptionFailed
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


def create_app(settings: NotifierSettings) -> FastAPI:
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    teams = team_directory(settings.notifier_teams)
    vault = Vault(settings)
    codec = AvroCodec(settings.schemas_dir)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = make_producer(settings)
        await producer.start()
        consumer = AlertConsumer(settings, codec, sessions, producer)
        state["consumer"] = consumer
        task = asyncio.create_task(consumer.run(), name="alert-consumer")
        task.add_done_callback(_crash_loudly)
        outbox = OutcomePublisher(sessions, producer, codec, settings)
        state["outbox"] = outbox
        publisher = asyncio.create_task(outbox.run(), name="outcome-publisher")
        deadlines = asyncio.create_task(
            keep_escalating(sessions, settings.notifier_overdue_check_s), name="overdue-check"
        )
        log.info("notifier.started", kafka=settings.kafka_bootstrap)
        try:
            yield
        finally:
            for running in (task, publisher, deadlines):
                running.cancel()
                with suppress(asyncio.CancelledError):
                    await running
            await producer.stop()
            await engine.dispose()

    app = FastAPI(title="Twente hub team API", version="1", lifespan=lifespan)

    async def team_member(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Member:
        member = teams.find(credentials.credentials) if credentials else None
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

    async def visible_alert(
        session: AsyncSession, member: Member, alert_id: str, for_update: bool = False
    ) -> Alert:
        alert = await session.get(Alert, alert_id, with_for_update=for_update)
        if alert is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such alert")
        if not member.team_sees(alert):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this alert is not for your team")
        return alert

    def log_access(
        session: AsyncSession, member: Member, alert: Alert, domains: list[str], action: str
    ) -> None:
        session.add(
            AccessLogEntry(
                member_id=member.member_id,
                team_id=member.team.team_id,
                alert_id=alert.alert_id,
                household_id=alert.household_id,
                purpose=alert.purpose,
                domains=domains,
                action=action,
            )
        )

    @app.get("/v1/alerts", response_model=AlertPage)
    async def list_alerts(
        member: Annotated[Member, Depends(team_member)],
        municipality: Annotated[str | None, Query(pattern=r"^GM\d{4}$")] = None,
        rule: str | None = None,
        alert_status: Annotated[str | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> AlertPage:
        query = select(Alert).where(
            Alert.municipality_code.in_(member.team.municipalities),
            Alert.purpose.in_(member.team.purposes),
        )
        if municipality:
            query = query.where(Alert.municipality_code == municipality)
        if rule:
            query = query.where(Alert.rule_id == rule)
        if alert_status:
            query = query.where(Alert.status == alert_status)
        async with sessions() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.scalars(
                # Open ones first, by deadline: the overdue ones lead.
                query.order_by(Alert.status == "closed", Alert.deadline, Alert.alert_id)
                .limit(limit)
                .offset(offset)
            )
            return AlertPage(
                total=total or 0,
                alerts=[AlertOut.model_validate(present(r, member.team)) for r in rows],
            )

    @app.get("/v1/alerts/{alert_id}", response_model=AlertOut)
    async def get_alert(alert_id: str, member: Annotated[Member, Depends(team_member)]) -> AlertOut:
        async with sessions() as session, session.begin():
            alert = await visible_alert(session, member, alert_id)
            view = AlertOut.model_validate(present(alert, member.team))
            log_access(
                session, member, alert, sorted({c.domain for c in view.contributions}), "view-alert"
            )
            return view

    @app.get(
        "/v1/alerts/{alert_id}/contact",
        response_model=ContactPage,
        responses={410: {"description": "the alert's personal details were removed"}},
    )
    async def get_contact(
        alert_id: str, member: Annotated[Member, Depends(team_member)]
    ) -> ContactPage:
        """Decrypts the contact details of the events this team's purposes disclose."""
        async with sessions() as session, session.begin():
            alert = await visible_alert(session, member, alert_id)
            if alert.details_removed_at is not None:
                raise HTTPException(
                    status.HTTP_410_GONE, "the personal details of this alert were removed"
                )
            disclosed = member.disclosed
            event_ids = [c.event_id for c in alert.contributions if c.domain in disclosed]
            try:
                stored = await open_contacts(session, vault, alert.household_id, event_ids)
            except DecryptionFailed:
                raise HTTPException(
                    status.HTTP_410_GONE, "the personal details of this alert were removed"
                ) from None
            domains = sorted({c.domain for c in stored})
            log_access(session, member, alert, domains, "view-contact")
            metrics.CONTACT_VIEWS.labels(alert.rule_id).inc()
            return ContactPage(
                alert_id=alert.alert_id,
                purpose=alert.purpose,
                domains_shown=domains,
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

    async def act(
        alert_id: str,
        member: Member,
        action: Callable[[AsyncSession, Alert], object],
    ) -> AlertOut:
        async with sessions() as session, session.begin():
            alert = await visible_alert(session, member, alert_id, for_update=True)
            try:
                action(session, alert)
            except Conflict as exc:
                raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
            return AlertOut.model_validate(present(alert, member.team))

    @app.post(
        "/v1/alerts/{alert_id}/claim",
        response_model=AlertOut,
        responses={409: {"description": "closed, or claimed by another member"}},
    )
    async def claim_alert(
        alert_id: str, member: Annotated[Member, Depends(team_member)]
    ) -> AlertOut:
        """Take the alert on; claiming it again is harmless."""

        def take(session: AsyncSession, alert: Alert) -> None:
            if claim(session, alert, member.team.team_id, member.member_id):
                metrics.ALERT_ACTIONS.labels("claim", alert.rule_id).inc()

        return await act(alert_id, member, take)

    @app.post(
        "/v1/alerts/{alert_id}/outcome",
        response_model=AlertOut,
        responses={409: {"description": "the alert was closed already"}},
    )
    async def record_outcome(
        alert_id: str, body: OutcomeIn, member: Annotated[Member, Depends(team_member)]
    ) -> AlertOut:
        """Close the alert with an outcome from the fixed list; the matcher hears of it."""

        def finish(session: AsyncSession, alert: Alert) -> None:
            close(session, alert, member.team.team_id, member.member_id, body.outcome)
            metrics.ALERT_ACTIONS.labels("outcome", alert.rule_id).inc()

        view = await act(alert_id, member, finish)
        state["outbox"].wake()  # stored and queued: published in the background
        return view

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
