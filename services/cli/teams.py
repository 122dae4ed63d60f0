"""`hub teams ...` and `hub deliveries ...`: the team directory and the delivery outbox.

Teams, members and channels live in PostgreSQL; these commands are how a municipal data
team manages them. Member tokens are shown once and kept only as a digest. `hub deliveries`
is the operator's view of the outbox, and `replay` re-sends what a receiver missed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from services.cli.registries import JsonOption, err, in_transaction, out, refuse, refuse_invalid
from services.shared.logging import configure_logging

if TYPE_CHECKING:
    from services.notifier.settings import NotifierSettings
    from services.shared.crypto import Vault

T = TypeVar("T")

teams_app = typer.Typer(
    help="The team directory: teams, where they work, purposes, members, channels.",
    no_args_is_help=True,
)
deliveries_app = typer.Typer(
    help="The delivery outbox: what was sent to which channel, and replays.",
    no_args_is_help=True,
)


def _settings() -> NotifierSettings:
    from services.notifier.settings import NotifierSettings

    settings = NotifierSettings()
    configure_logging(json=settings.log_json, level=settings.log_level)
    return settings


def _in_transaction(work: Callable[[AsyncSession, Vault], Awaitable[T]]) -> T:
    """One transaction with the notifier's database, and its vault for channel secrets."""
    from services.shared.crypto import Vault

    settings = _settings()
    vault = Vault(settings)
    return in_transaction(settings, lambda session: work(session, vault))


@teams_app.command()
def seed() -> None:
    """Create the starting directory: a debt-help team and a wijkteam in each of the 14
    municipalities, and the regional fallback team. Teams that exist are left as they are,
    so running it again changes nothing."""
    from services.notifier import directory

    specs = directory.seed()

    async def work(session: AsyncSession, vault: Vault) -> int:
        return sum([await directory.apply_team(session, vault, s, only_new=True) for s in specs])

    added = _in_transaction(work)
    out.print(f"{added} teams added; {len(specs) - added} were there already")


@teams_app.command()
def apply(
    file: Annotated[Path, typer.Argument(help="YAML file with `teams:` (docs/notifier.md).")],
) -> None:
    """Create or update the teams of FILE, with exactly the channels it lists.

    Secrets in the file can name an environment variable instead: `secret: env:HOOK_SECRET`.
    """
    import os

    import yaml
    from pydantic import ValidationError

    from services.notifier import directory

    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        refuse(f"{file}: cannot read: {exc}")

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, str) and value.startswith("env:"):
            name = value.removeprefix("env:")
            if name not in os.environ:
                refuse(f"{file}: environment variable {name} is not set")
            return os.environ[name]
        return value

    try:
        teams = directory.TeamsFile.model_validate(resolve(raw)).teams
    except ValidationError as exc:
        refuse_invalid(exc, str(file))

    async def work(session: AsyncSession, vault: Vault) -> None:
        for spec in teams:
            await directory.apply_team(session, vault, spec)

    _in_transaction(work)
    out.print(f"{len(teams)} teams applied from {file}")


@teams_app.command("list")
def list_teams(as_json: JsonOption = False) -> None:
    """Every team: where it works, its purposes, members and channels (no secrets)."""
    from sqlalchemy import func, select

    from services.shared.db.models import Team, TeamChannel, TeamMember

    async def work(session: AsyncSession, vault: Vault) -> list[dict[str, Any]]:
        members = dict(
            (
                await session.execute(
                    select(TeamMember.team_id, func.count())
                    .where(TeamMember.active)
                    .group_by(TeamMember.team_id)
                )
            ).all()
        )
        channels: dict[str, list[str]] = {}
        for channel in await session.scalars(select(TeamChannel).where(TeamChannel.active)):
            notices = ", ".join(channel.notices)
            channels.setdefault(channel.team_id, []).append(
                f"{channel.kind}#{channel.channel_id} {channel.target} ({notices})"
            )
        return [
            {
                "team_id": t.team_id,
                "name": t.name,
                "active": t.active,
                "fallback": t.fallback,
                "purposes": t.purposes,
                "municipalities": t.municipalities,
                "wijken": t.wijken,
                "members": members.get(t.team_id, 0),
                "channels": channels.get(t.team_id, []),
            }
            for t in await session.scalars(select(Team).order_by(Team.team_id))
        ]

    teams = _in_transaction(work)
    if as_json:
        typer.echo(json.dumps(teams, indent=2))
        return
    table = Table("team", "purposes", "covers", "members", "channels", title="Teams")
    for t in teams:
        covers = "fallback" if t["fallback"] else ", ".join(t["municipalities"] + t["wijken"])
        name = t["team_id"] + ("" if t["active"] else " (inactive)")
        table.add_row(
            name, ", ".join(t["purposes"]), covers, str(t["members"]), "\n".join(t["channels"])
        )
    out.print(table)


@teams_app.command("add-member")
def add_member(
    team: Annotated[str, typer.Argument(help="Team id.")],
    member: Annotated[str, typer.Argument(help="Member id (a staff number, not a name).")],
) -> None:
    """Add a member (or give one a new token); the token is printed once, on stdout."""
    from services.notifier import directory
    from services.shared.errors import ConfigurationError

    async def work(session: AsyncSession, vault: Vault) -> str:
        return await directory.add_member(session, team, member)

    try:
        token = _in_transaction(work)
    except ConfigurationError as exc:
        refuse(str(exc))
    err.print(f"member {member} of {team}: the token below is shown once; hand it over safely")
    typer.echo(token)


@teams_app.command("revoke-member")
def revoke_member(member: Annotated[str, typer.Argument(help="Member id.")]) -> None:
    """Stop a member's token (and any inbox session of theirs) at once."""
    from services.notifier import directory

    async def work(session: AsyncSession, vault: Vault) -> bool:
        return await directory.revoke_member(session, member)

    if not _in_transaction(work):
        refuse(f"no member {member!r}")
    out.print(f"member {member} revoked")


def _set_active(team: str, active: bool) -> None:
    from services.notifier import directory

    async def work(session: AsyncSession, vault: Vault) -> bool:
        return await directory.set_team_active(session, team, active)

    if not _in_transaction(work):
        refuse(f"no team {team!r}")
    out.print(f"team {team} {'enabled' if active else 'disabled'}")


@teams_app.command()
def disable(team: Annotated[str, typer.Argument(help="Team id.")]) -> None:
    """Stop routing alerts to a team and end its members' access; its history stays."""
    _set_active(team, False)


@teams_app.command()
def enable(team: Annotated[str, typer.Argument(help="Team id.")]) -> None:
    """Route alerts to a disabled team again."""
    _set_active(team, True)


def _moment(value: str, option: str) -> dt.datetime:
    """An ISO date or date-time; a date means its start, in Europe/Amsterdam."""
    from services.shared.region import AMSTERDAM

    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO date or date-time", param_hint=option
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=AMSTERDAM)


@deliveries_app.command("list")
def list_deliveries(
    status: Annotated[str | None, typer.Option(help="pending, delivered or failed.")] = None,
    team: Annotated[str | None, typer.Option(help="Team id.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO date or date-time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonOption = False,
) -> None:
    """Deliveries, newest first, with attempts and the last error; and counts per channel."""
    from sqlalchemy import select

    from services.notifier.delivery import delivery_counts
    from services.shared.db.models import Delivery

    query = select(Delivery).order_by(Delivery.delivery_id.desc()).limit(limit)
    if status:
        query = query.where(Delivery.status == status)
    if team:
        query = query.where(Delivery.team_id == team)
    if since:
        query = query.where(Delivery.created_at >= _moment(since, "--since"))

    async def work(session: AsyncSession, vault: Vault) -> dict[str, Any]:
        rows = [
            {
                "delivery_id": d.delivery_id,
                "created_at": d.created_at.isoformat(),
                "team_id": d.team_id,
                "channel": f"{d.channel_kind}#{d.channel_id}",
                "alert_id": d.alert_id,
                "notice": d.notice,
                "alert_version": d.alert_version,
                "status": d.status,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "idempotency_key": d.idempotency_key,
            }
            for d in await session.scalars(query)
        ]
        return {"counts": await delivery_counts(session), "deliveries": rows}

    found = _in_transaction(work)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table("id", "created", "team", "channel", "notice", "status", "tries", "last error")
    for d in found["deliveries"]:
        table.add_row(
            str(d["delivery_id"]),
            d["created_at"][:19],
            d["team_id"],
            d["channel"],
            f"{d['notice']} v{d['alert_version']}",
            d["status"],
            str(d["attempts"]),
            d["last_error"] or "",
        )
    out.print(table)
    out.print(
        "per channel: "
        + "; ".join(
            f"{channel} " + ", ".join(f"{s} {n}" for s, n in sorted(counts.items()))
            for channel, counts in sorted(found["counts"].items())
        )
    )


@deliveries_app.command()
def attempts(delivery: Annotated[int, typer.Argument(help="Delivery id.")]) -> None:
    """Every attempt of one delivery: when, how long, and what came of it."""
    from sqlalchemy import select

    from services.shared.db.models import DeliveryAttempt

    async def work(session: AsyncSession, vault: Vault) -> list[DeliveryAttempt]:
        return list(
            await session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id == delivery)
                .order_by(DeliveryAttempt.at, DeliveryAttempt.id)
            )
        )

    table = Table("at", "channel", "status", "error", "ms", title=f"Delivery {delivery}")
    for a in _in_transaction(work):
        table.add_row(
            a.at.isoformat()[:23], a.channel_kind, a.status, a.error or "", str(a.duration_ms)
        )
    out.print(table)


@deliveries_app.command()
def replay(
    since: Annotated[str, typer.Option(help="Start of the range (ISO date or date-time).")],
    until: Annotated[
        str | None, typer.Option(help="End of the range, exclusive; default now.")
    ] = None,
    team: Annotated[str | None, typer.Option(help="Only this team's deliveries.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only webhook or email.")] = None,
    failed_only: Annotated[
        bool, typer.Option("--failed-only", help="Only deliveries that were given up.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Send again the notices queued in a time range: for a receiver that lost them or was
    down too long. Each keeps its idempotency key, so a receiver that has one can tell."""
    from services.notifier.delivery import replay as requeue

    if channel not in (None, "webhook", "email"):
        raise typer.BadParameter(f"{channel!r} is not webhook or email", param_hint="--channel")
    start = _moment(since, "--since")
    end = _moment(until, "--until") if until else dt.datetime.now(dt.UTC)
    if end <= start:
        raise typer.BadParameter("must lie after --since", param_hint="--until")

    async def work(session: AsyncSession, vault: Vault) -> int:
        return await requeue(
            session,
            since=start,
            until=end,
            team_id=team,
            channel_kind=channel,
            failed_only=failed_only,
        )

    count = _in_transaction(work)
    summary = {"requeued": count, "since": start.isoformat(), "until": end.isoformat()}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        out.print(
            f"{count} deliveries queued again ({start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}); "
            "a running notifier sends them within seconds"
        )
