"""Routing alerts to teams and delivering notices to their channels, durably.

Routing and queueing happen in the transaction that stores the alert (or marks it overdue):
an alert stored is an alert routed to the inbox of its team(s), and a notice queued in the
`deliveries` outbox for each of their webhooks and mailboxes that want it.

The dispatcher sends the outbox. A notifier claims a delivery with a lease (`lease_until`),
renewed at every attempt, so no transaction stays open while a receiver is waited for; a
killed notifier's lease runs out and another notifier goes on. Retries are stamina's:
exponential backoff with a cap, no retry after a permanent error. Every attempt is stored in
`delivery_attempts` as it ends. When the last attempt fails the operator is warned: a metric,
a log event, and at most one e-mail per team per day. Delivery is at-least-once: a receiver
deduplicates on the idempotency key, which stays the same across retries and replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import stamina
from sqlalchemy import and_, any_, func, literal, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased
from structlog.contextvars import bound_contextvars

from services.notifier import metrics
from services.notifier.channels import (
    Channel,
    DeliveryError,
    Notice,
    NoticeKind,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from services.notifier.directory import channel_secrets, route
from services.notifier.mail import EmailChannel, send_operator_warning
from services.notifier.settings import NotifierSettings, SmtpConfig
from services.notifier.webhook import OAuthClientCredentials, WebhookChannel
from services.shared.correlation import NO_TRACE, Trace
from services.shared.crypto import Vault
from services.shared.db.models import (
    Alert,
    AlertRoute,
    Delivery,
    DeliveryAttempt,
    OperatorWarning,
    Team,
    TeamChannel,
)
from services.shared.errors import DecryptionFailed
from services.shared.logging import get_logger
from services.shared.region import AMSTERDAM

log = get_logger("hub.notifier.delivery")

#: How often the dispatcher looks at the outbox when nothing woke it.
POLL_S = 1.0


def idempotency_key(alert_id: str, version: int, notice: str, channel_id: int) -> str:
    return f"{alert_id}.v{version}.{notice}.c{channel_id}"


async def active_teams(session: AsyncSession) -> list[Team]:
    return list(await session.scalars(select(Team).where(Team.active)))


@dataclass(frozen=True)
class Routing:
    """The routes one alert version got in a transaction. Counted by `count` once that
    transaction committed: one rolled back (or retried from the start) routed nothing."""

    municipality: str
    #: (team id, via) of each route new to the alert.
    added: tuple[tuple[str, str], ...]
    #: How many inbox deliveries of the version to time: each team's inbox shows it.
    timed: int
    trace: Trace

    @property
    def new_teams(self) -> list[str]:
        return [team_id for team_id, _ in self.added]

    def count(self) -> None:
        for _, via in self.added:
            metrics.ALERTS_ROUTED.labels(via).inc()
            if via == "fallback":
                metrics.ALERTS_FALLBACK.labels(self.municipality).inc()
            metrics.DELIVERIES.labels("inbox", "delivered").inc()
        seconds = self.trace.seconds_since_accepted()
        if seconds is not None:
            for _ in range(self.timed):
                metrics.EVENT_TO_DELIVERY.labels("inbox").observe(seconds)
        if self.added:
            with bound_contextvars(correlation_id=self.trace.correlation_id):
                log.info("alert.routed", teams=len(self.added), channel="inbox")


async def route_alert(
    session: AsyncSession,
    teams: Sequence[Team],
    alert: dict[str, Any],
    *,
    report: bool = True,
    trace: Trace = NO_TRACE,
    stored: bool = True,
) -> Routing:
    """Routes an alert to its team(s) (kept routes stay); the caller counts the result once
    it committed. With the `trace` of the version's event the inbox delivery is timed: for
    each team the directory routes it to when this version was just `stored` (new or
    updated, each inbox shows it now), else (routed later) for each team new to it.

    An alert without any team, not even a fallback, stays unrouted: logged (unless the
    caller reports it), and routed by `route_unrouted` once the directory has a team for it.
    """
    routes = route(teams, alert["purpose"], alert["municipality_code"], alert["wijk_code"])
    if not routes:
        if report:
            log.error(
                "alert.unrouted",
                alert_id=alert["alert_id"],
                municipality=alert["municipality_code"],
                purpose=alert["purpose"],
            )
        return Routing(alert["municipality_code"], (), 0, trace)
    rows = [{"alert_id": alert["alert_id"], "team_id": r.team_id, "via": r.via} for r in routes]
    added = (
        await session.execute(
            insert(AlertRoute)
            .values(rows)
            .on_conflict_do_nothing()
            .returning(AlertRoute.team_id, AlertRoute.via)
        )
    ).all()
    return Routing(
        alert["municipality_code"],
        tuple((team_id, via) for team_id, via in added),
        len(routes) if stored else len(added),
        trace,
    )


async def queue_notices(
    session: AsyncSession,
    alerts: Iterable[tuple[str, int]],
    notice: NoticeKind,
    *,
    teams: Collection[str] | None = None,
    except_teams: Collection[str] = (),
) -> int:
    """Queues `notice` of each (alert id, version) for every active channel of the alert's
    teams (or of `teams` only, or all but `except_teams`) that wants it; a notice queued
    before is not queued again. Returns how many.

    Each notice keeps the correlation id of its version's event: the alert row holds it
    while that version is its newest, as when the version is stored or escalated."""
    versions = dict(alerts)
    if not versions or (teams is not None and not teams):
        return 0
    targets = (
        await session.execute(
            select(
                AlertRoute.alert_id,
                TeamChannel.team_id,
                TeamChannel.channel_id,
                TeamChannel.kind,
                Alert.version,
                Alert.correlation_id,
            )
            .join(Alert, Alert.alert_id == AlertRoute.alert_id)
            .join(TeamChannel, TeamChannel.team_id == AlertRoute.team_id)
            .join(Team, Team.team_id == TeamChannel.team_id)
            .where(
                AlertRoute.alert_id.in_(list(versions)),
                TeamChannel.active,
                Team.active,
                literal(notice) == any_(TeamChannel.notices),
                AlertRoute.team_id.in_(teams) if teams is not None else true(),
                AlertRoute.team_id.not_in(except_teams) if except_teams else true(),
            )
        )
    ).all()
    if not targets:
        return 0
    rows = [
        {
            "idempotency_key": idempotency_key(alert_id, versions[alert_id], notice, channel_id),
            "alert_id": alert_id,
            "alert_version": versions[alert_id],
            "correlation_id": correlation_id if version == versions[alert_id] else None,
            "notice": notice,
            "team_id": team_id,
            "channel_id": channel_id,
            "channel_kind": kind,
        }
        for alert_id, team_id, channel_id, kind, version, correlation_id in targets
    ]
    queued = await session.execute(
        insert(Delivery).values(rows).on_conflict_do_nothing().returning(Delivery.channel_kind)
    )
    return len(queued.all())


async def start_known_series(session: AsyncSession) -> None:
    """Creates at 0 the series whose labels come from the directory and the stored alerts: a
    give-up per team channel; per rule and municipality of the stored alerts, stored and
    overdue, and per rule, stale and the latency. Prometheus sees an increase only of a series
    it had seen before, so a team's first give-up would otherwise raise no alert."""
    for kind, team_id in await session.execute(
        select(TeamChannel.kind, TeamChannel.team_id).distinct()
    ):
        metrics.DELIVERIES_GAVE_UP.labels(kind, team_id)
    for rule, municipality in await session.execute(
        select(Alert.rule_id, Alert.municipality_code).group_by(
            Alert.rule_id, Alert.municipality_code
        )
    ):
        metrics.EVENT_TO_ALERT.labels(rule)
        metrics.ALERTS_STALE.labels(rule)
        metrics.ALERTS_STORED.labels(rule, municipality)
        metrics.ALERTS_OVERDUE.labels(rule, municipality)


async def route_unrouted(session: AsyncSession) -> list[Routing]:
    """Routes alerts that no active team has: stored before the directory had their team,
    or left behind by a team that was disabled. Open ones get their `raised` notice.
    Returns the routings, for the caller to count once it committed, and sets the gauge of
    open ones that still have no team."""
    with_active_team = (
        select(AlertRoute.alert_id)
        .join(Team, Team.team_id == AlertRoute.team_id)
        .where(AlertRoute.alert_id == Alert.alert_id, Team.active)
        .exists()
    )
    with_any_team = select(AlertRoute.alert_id).where(AlertRoute.alert_id == Alert.alert_id)
    unrouted = list(
        await session.scalars(
            select(Alert)
            # A closed alert is only routed when it never had a team (stored before the
            # directory): a disabled team's history does not pass to the next team.
            .where(
                or_(
                    and_(Alert.status != "closed", ~with_active_team),
                    ~with_any_team.exists(),
                )
            )
            .order_by(Alert.alert_id)
            .with_for_update(skip_locked=True)
        )
    )
    teams = await active_teams(session) if unrouted else []
    routed = []
    routings = []
    for alert in unrouted:
        values = {
            "alert_id": alert.alert_id,
            "purpose": alert.purpose,
            "municipality_code": alert.municipality_code,
            "wijk_code": alert.wijk_code,
        }
        trace = Trace(
            alert.correlation_id, alert.accepted_at.timestamp() if alert.accepted_at else None
        )
        routing = await route_alert(session, teams, values, report=False, trace=trace, stored=False)
        routings.append(routing)
        added = routing.new_teams
        if added and alert.status != "closed":
            routed.append(alert)
            # The new teams hear of it as new, and of its deadline if that passed already.
            await queue_notices(session, [(alert.alert_id, alert.version)], "raised", teams=added)
            if alert.overdue_at is not None:
                await queue_notices(
                    session, [(alert.alert_id, alert.version)], "overdue", teams=added
                )
    # `routed` holds open alerts only.
    remaining = sum(a.status != "closed" for a in unrouted) - len(routed)
    metrics.ALERTS_UNROUTED.set(remaining)
    if remaining:  # closed ones without a team only lack a reader for their history
        # One line a round, not one per alert: the directory lacks a team (or a fallback).
        log.error("alerts.unrouted", count=remaining)
    return routings


class Dispatcher:
    """Sends the outbox: at most one delivery per channel at a time, `concurrency` in all."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        vault: Vault,
        settings: NotifierSettings,
        client: httpx.AsyncClient,
    ) -> None:
        self._sessions = sessions
        self._vault = vault
        self._settings = settings
        self._client = client
        self._smtp = SmtpConfig.of(settings)
        self._wake = asyncio.Event()
        self._busy: set[int] = set()
        self._tasks: set[asyncio.Task[bool]] = set()
        #: Channels by id and configuration, so an OAuth2 token is reused between notices.
        self._channels: dict[tuple[int, str, bytes | None], Channel] = {}
        self._oauth: list[OAuthClientCredentials] = []

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._start_due()
                except Exception as exc:  # the database away: try again next round, loudly
                    log.warning("deliveries.dispatch_failed", error=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S)
                self._wake.clear()
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for oauth in self._oauth:
                await oauth.aclose()

    @property
    def lease_s(self) -> float:
        """How long a claimed delivery is this notifier's before another may take it over:
        the longest wait between attempts and an attempt (a token fetch, a send, a fresh
        token and a send again), with a margin. Renewed at every attempt."""
        return self._settings.delivery_wait_max_s + 4 * self._settings.delivery_timeout_s + 5

    async def _start_due(self) -> None:
        free = self._settings.delivery_concurrency - len(self._busy)
        if free <= 0:
            return
        now = func.now()
        leased = aliased(Delivery)
        async with self._sessions() as session:
            # The oldest pending notice of each channel that nobody is sending to right now.
            rows = (
                await session.execute(
                    select(Delivery.delivery_id, Delivery.channel_id)
                    .distinct(Delivery.channel_id)
                    .join(TeamChannel, TeamChannel.channel_id == Delivery.channel_id)
                    .join(Team, Team.team_id == Delivery.team_id)
                    .where(
                        Delivery.status == "pending",
                        TeamChannel.active,
                        Team.active,
                        Delivery.channel_id.not_in(self._busy or {-1}),
                        ~select(leased.delivery_id)
                        .where(
                            leased.channel_id == Delivery.channel_id,
                            leased.status == "pending",
                            leased.lease_until > now,
                        )
                        .exists(),
                    )
                    .order_by(Delivery.channel_id, Delivery.delivery_id)
                    .limit(free)
                )
            ).all()
        for delivery_id, channel_id in rows:
            self._busy.add(channel_id)
            task = asyncio.create_task(self._deliver(delivery_id))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._done, channel_id=channel_id))

    def _done(self, task: asyncio.Task[bool], *, channel_id: int) -> None:
        self._tasks.discard(task)
        self._busy.discard(channel_id)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # the database away mid-way: the lease runs out, it is tried again
            log.warning("delivery.interrupted", error=type(exc).__name__)
            return
        if task.result():  # something was sent: the channel's next notice may go now
            self.wake()

    async def _renew(self, lease: _Lease, *, claim: bool = False) -> bool:
        """Takes the delivery (`claim`) or extends the lease this notifier holds, for
        `lease_s`; False when another notifier has it. A short transaction each time."""
        held = (
            or_(Delivery.lease_until.is_(None), Delivery.lease_until < func.now())
            if claim
            else Delivery.lease_until == lease.until
        )
        async with self._sessions() as session, session.begin():
            until = await session.scalar(
                update(Delivery)
                .where(
                    Delivery.delivery_id == lease.delivery_id, Delivery.status == "pending", held
                )
                .values(lease_until=func.now() + dt.timedelta(seconds=self.lease_s))
                .returning(Delivery.lease_until)
            )
        if until is None:
            return False
        lease.until = until
        return True

    async def _deliver(self, delivery_id: int) -> bool:
        """Tries one delivery to the end; False when another notifier has it."""
        lease = _Lease(delivery_id)
        if not await self._renew(lease, claim=True):
            return False
        async with self._sessions() as session:
            delivery = await session.get(Delivery, delivery_id)
            if delivery is None:  # erased meanwhile
                return False
            alert = await session.get(Alert, delivery.alert_id)
            channel = await session.get(TeamChannel, delivery.channel_id)
            team = await session.get(Team, delivery.team_id)
        if alert is None or channel is None or team is None:
            return False  # erased meanwhile: the cascade takes the delivery too
        # The correlation id of the event behind the version this is a notice of; a delivery
        # queued before 0011 has none: then the alert's, when that is still its version.
        correlation_id = delivery.correlation_id
        if correlation_id is None and delivery.alert_version == alert.version:
            correlation_id = alert.correlation_id
        with bound_contextvars(correlation_id=correlation_id):
            return await self._deliver_notice(lease, delivery, alert, channel, team)

    async def _deliver_notice(
        self, lease: _Lease, delivery: Delivery, alert: Alert, channel: TeamChannel, team: Team
    ) -> bool:
        delivery_id = delivery.delivery_id
        notice = self._notice(delivery, alert, team)
        sender = self._sender(channel)
        error: DeliveryError | None = None
        try:
            async for attempt in stamina.retry_context(
                on=TransientDeliveryError,
                attempts=self._settings.delivery_attempts,
                timeout=None,
                wait_initial=self._settings.delivery_wait_initial_s,
                wait_max=self._settings.delivery_wait_max_s,
                wait_jitter=min(1.0, self._settings.delivery_wait_initial_s),
            ):
                with attempt:
                    await self._attempt(
                        lease, delivery, sender, notice, last=self._is_last(attempt.num)
                    )
        except _LeaseLost:
            log.warning("delivery.lease_lost", delivery_id=delivery_id)
            return False
        except DeliveryError as exc:
            error = exc
        if not await self._finish(lease, delivery, channel.kind, error):
            return False
        if error is not None:
            await self._gave_up(delivery, team, error)
            return True
        log.info(
            "delivery.delivered",
            delivery_id=delivery_id,
            channel=channel.kind,
            notice=delivery.notice,
            attempts=delivery.attempts,
        )
        # Timed only for the notice the event caused (see services.notifier.metrics), on its
        # own way out: a replay is an operator's resend, days later perhaps, not the event's.
        if (
            alert.accepted_at is not None
            and delivery.notice in ("raised", "updated")
            and delivery.alert_version == alert.version
            and delivery.replayed_at is None
        ):
            seconds = (dt.datetime.now(dt.UTC) - alert.accepted_at).total_seconds()
            metrics.EVENT_TO_DELIVERY.labels(channel.kind).observe(max(0.0, seconds))
        return True

    async def _finish(
        self, lease: _Lease, delivery: Delivery, kind: str, error: DeliveryError | None
    ) -> bool:
        """Stores how the delivery ended and lets the lease go; False when it was no longer
        this notifier's (its lease ran out and another took it over)."""
        now = dt.datetime.now(dt.UTC)
        ended = {"status": "delivered", "delivered_at": now, "last_error": None}
        if error is not None:
            ended = {"status": "failed", "last_error": error.reason}
        async with self._sessions() as session, session.begin():
            # Counted from the stored attempts: those of a notifier killed mid-way count too.
            attempts = (
                select(func.count())
                .select_from(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id == delivery.delivery_id)
                .scalar_subquery()
            )
            done = await session.execute(
                update(Delivery)
                .where(
                    Delivery.delivery_id == delivery.delivery_id,
                    Delivery.status == "pending",
                    Delivery.lease_until == lease.until,
                )
                .values(last_attempt_at=now, lease_until=None, attempts=attempts, **ended)
                .returning(Delivery.attempts)
            )
            counted = done.scalar_one_or_none()
        if counted is None:
            return False
        delivery.attempts = counted
        if error is None:
            metrics.DELIVERIES.labels(kind, "delivered").inc()
        return True

    def _is_last(self, number: int) -> bool:
        return number >= self._settings.delivery_attempts

    async def _attempt(
        self, lease: _Lease, delivery: Delivery, sender: Channel, notice: Notice, last: bool
    ) -> None:
        """One try, stored in its own short transaction as soon as it ends (a kill keeps it);
        then the lease is renewed for the wait before the next."""
        started = time.monotonic()
        at = dt.datetime.now(dt.UTC)
        error: DeliveryError | None = None
        try:
            # The whole attempt within the part of the lease it was given.
            async with asyncio.timeout(4 * self._settings.delivery_timeout_s):
                await sender.send(notice)
        except TimeoutError:
            error = TransientDeliveryError("attempt-timeout")
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a bug or bad configuration: stop, loudly, do not loop
            log.error(
                "delivery.failed_unexpectedly",
                delivery_id=delivery.delivery_id,
                channel=delivery.channel_kind,
                error=type(exc).__name__,
            )
            error = PermanentDeliveryError(f"internal-{type(exc).__name__}")
        if error is None:
            status = "delivered"
        elif isinstance(error, PermanentDeliveryError) or last:
            status = "failed"
        else:
            status = "retry"
        async with self._sessions() as session, session.begin():
            session.add(
                DeliveryAttempt(
                    delivery_id=delivery.delivery_id,
                    at=at,
                    channel_kind=delivery.channel_kind,
                    status=status,
                    error=error.reason if error else None,
                    duration_ms=round((time.monotonic() - started) * 1000),
                )
            )
        metrics.DELIVERY_ATTEMPTS.labels(delivery.channel_kind, status).inc()
        if error is not None:
            if not await self._renew(lease):
                raise _LeaseLost
            raise error

    def _notice(self, delivery: Delivery, alert: Alert, team: Team) -> Notice:
        base = self._settings.notifier_public_url.rstrip("/")
        return Notice(
            idempotency_key=delivery.idempotency_key,
            kind=delivery.notice,  # type: ignore[arg-type]  # one of NoticeKind by construction
            alert_id=alert.alert_id,
            alert_version=delivery.alert_version,
            rule_id=alert.rule_id,
            rule_title=alert.rule_title or alert.rule_id,
            priority=alert.priority,
            deadline=alert.deadline,
            team_id=team.team_id,
            team_name=team.name,
            link=f"{base}/inbox/alerts/{alert.alert_id}",
            api_link=f"{base}/v1/alerts/{alert.alert_id}",
        )

    def _sender(self, row: TeamChannel) -> Channel:
        """The channel's sender; one that cannot be built fails every notice permanently."""
        try:
            return self._channel(row)
        except DecryptionFailed:
            # Sealed under another master key: the operator must apply the team's channels
            # again with this notifier's HUB_MASTER_KEY.
            return _Unusable("channel-secret-unreadable")
        except Exception as exc:  # bad configuration that validation let through
            log.error(
                "delivery.channel_unusable", channel_id=row.channel_id, error=type(exc).__name__
            )
            return _Unusable(f"internal-{type(exc).__name__}")

    def _channel(self, row: TeamChannel) -> Channel:
        key = (row.channel_id, row.target, row.sealed_secrets)
        if key in self._channels:
            return self._channels[key]
        secrets = channel_secrets(self._vault, row)
        channel: Channel
        if row.kind == "webhook":
            oauth = None
            if row.oauth_token_url and row.oauth_client_id:
                oauth = OAuthClientCredentials(
                    token_url=row.oauth_token_url,
                    client_id=row.oauth_client_id,
                    client_secret=secrets.get("client_secret", ""),
                    scope=row.oauth_scope,
                    timeout_s=self._settings.delivery_timeout_s,
                )
                self._oauth.append(oauth)
            channel = WebhookChannel(
                row.target,
                secrets["hmac"].encode(),
                source=self._settings.notifier_public_url,
                client=self._client,
                oauth=oauth,
                timeout_s=self._settings.delivery_timeout_s,
            )
        elif self._smtp is not None:
            channel = EmailChannel(self._smtp, row.target)
        else:
            channel = _Unusable("smtp-not-configured")
        self._channels[key] = channel
        return channel

    async def _gave_up(self, delivery: Delivery, team: Team, error: DeliveryError) -> None:
        metrics.DELIVERIES.labels(delivery.channel_kind, "failed").inc()
        metrics.DELIVERIES_GAVE_UP.labels(delivery.channel_kind, team.team_id).inc()
        log.error(
            "delivery.gave_up",
            delivery_id=delivery.delivery_id,
            alert_id=delivery.alert_id,
            team=team.team_id,
            channel=delivery.channel_kind,
            channel_id=delivery.channel_id,
            attempts=delivery.attempts,
            reason=error.reason,
        )
        if self._smtp is None or self._settings.operator_email is None:
            return
        day = dt.datetime.now(AMSTERDAM).date()
        try:
            async with self._sessions() as session, session.begin():
                first_today = (
                    await session.execute(
                        insert(OperatorWarning)
                        .values(team_id=team.team_id, day=day)
                        .on_conflict_do_nothing()
                        .returning(OperatorWarning.team_id)
                    )
                ).scalar_one_or_none()
                if first_today is None:
                    return  # warned already today
                failed = await session.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.team_id == team.team_id, Delivery.status == "failed")
                )
                # Sent inside the transaction: when sending fails, the row is rolled back
                # and the next delivery that fails today tries to warn again.
                await send_operator_warning(
                    self._smtp,
                    self._settings.operator_email,
                    team_id=team.team_id,
                    team_name=team.name,
                    channel_kind=delivery.channel_kind,
                    reason=error.reason,
                    failed=failed or 1,
                    day=day,
                    dashboard_link=f"{self._settings.notifier_public_url.rstrip('/')}/metrics",
                )
        except DeliveryError as exc:
            log.error("operator_warning.failed", team=team.team_id, reason=exc.reason)
            return
        metrics.OPERATOR_WARNINGS.labels(team.team_id).inc()
        log.warning("operator_warning.sent", team=team.team_id, day=day.isoformat())


@dataclass
class _Lease:
    """The lease this notifier holds on a delivery: its end, as the database set it."""

    delivery_id: int
    until: dt.datetime | None = None


class _LeaseLost(Exception):
    """The lease ran out and another notifier took the delivery over (or it was settled)."""


class _Unusable:
    """A channel that cannot be built: every notice fails permanently, with the reason."""

    kind = "unusable"

    def __init__(self, reason: str) -> None:
        self._reason = reason

    async def send(self, notice: Notice) -> None:
        raise PermanentDeliveryError(self._reason)


async def replay(
    session: AsyncSession,
    *,
    since: dt.datetime,
    until: dt.datetime,
    team_id: str | None = None,
    channel_kind: str | None = None,
    failed_only: bool = False,
) -> int:
    """Queues again the notices created in [since, until) (with their own idempotency keys,
    so a receiver that did get one can tell); returns how many. Notices of removed channels
    and disabled teams are left alone: nothing would send them."""
    sendable = (
        select(TeamChannel.channel_id)
        .join(Team, Team.team_id == TeamChannel.team_id)
        .where(TeamChannel.channel_id == Delivery.channel_id, TeamChannel.active, Team.active)
        .exists()
    )
    query = (
        update(Delivery)
        .where(
            Delivery.created_at >= since,
            Delivery.created_at < until,
            Delivery.status != "pending",
            sendable,
        )
        .values(status="pending", replayed_at=func.now(), lease_until=None)
        .returning(Delivery.delivery_id)
    )
    if team_id is not None:
        query = query.where(Delivery.team_id == team_id)
    if channel_kind is not None:
        query = query.where(Delivery.channel_kind == channel_kind)
    if failed_only:
        query = query.where(Delivery.status == "failed")
    return len((await session.execute(query)).all())


async def delivery_counts(session: AsyncSession) -> dict[str, dict[str, int]]:
    """Per channel, deliveries by status; the inbox counts routed alerts."""
    counts: dict[str, dict[str, int]] = {
        "inbox": {
            "delivered": await session.scalar(select(func.count()).select_from(AlertRoute)) or 0
        }
    }
    rows = await session.execute(
        select(Delivery.channel_kind, Delivery.status, func.count()).group_by(
            Delivery.channel_kind, Delivery.status
        )
    )
    for kind, status, count in rows:
        counts.setdefault(kind, {})[status] = count
    return counts
