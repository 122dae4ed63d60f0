"""`hub partners ...`: the partner registry: add a partner, list them, rotate a key, disable.

API keys are printed once, on stdout, and kept only as SHA-256 digests.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from services.cli.registries import JsonOption, err, in_transaction, out, refuse, refuse_invalid
from services.shared.logging import configure_logging

T = TypeVar("T")

partners_app = typer.Typer(
    help="The partner registry: who may publish which events, and their API keys.",
    no_args_is_help=True,
)


def _in_transaction(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    from services.shared.config import DatabaseSettings, HubSettings

    hub = HubSettings()
    configure_logging(json=hub.log_json, level=hub.log_level)
    return in_transaction(DatabaseSettings(), work)


@partners_app.command()
def add(
    partner_id: Annotated[str, typer.Argument(help="Short id, e.g. enexis-01.")],
    name: Annotated[str, typer.Option(help="The partner's name.")],
    partner_type: Annotated[
        str, typer.Option("--type", help="DDAS creditor type, GGD_MELDFUNCTIE, STREETTRIAGE, ...")
    ],
    event_type: Annotated[
        list[str], typer.Option("--event-type", help="An event type it may publish (repeat).")
    ],
    may_send_bsn: Annotated[
        bool, typer.Option("--may-send-bsn", help="It may send a BSN (health insurers).")
    ] = False,
) -> None:
    """Register a partner; its first API key is printed once, on stdout."""
    from pydantic import ValidationError

    from services.ingest.registry import PartnerSpec, add_partner
    from services.shared.errors import ConfigurationError

    try:
        spec = PartnerSpec(
            partner_id=partner_id,
            name=name,
            partner_type=partner_type,
            event_types=event_type,
            may_send_bsn=may_send_bsn,
        )
    except ValidationError as exc:
        refuse_invalid(exc, whole="partner")

    async def work(session: AsyncSession) -> str:
        return await add_partner(session, spec)

    try:
        key = _in_transaction(work)
    except ConfigurationError as exc:
        refuse(str(exc))
    err.print(f"partner {partner_id}: the API key below is shown once; hand it over safely")
    typer.echo(key)


@partners_app.command("list")
def list_partners(
    as_json: JsonOption = False,
) -> None:
    """Every partner: type, what it may publish, BSN, active, and its keys' state (no keys)."""
    from sqlalchemy import select

    from services.shared.db.models import Partner, PartnerApiKey

    async def work(session: AsyncSession) -> list[dict[str, Any]]:
        now = dt.datetime.now(dt.UTC)
        keys: dict[str, list[str]] = {}
        for k in await session.scalars(select(PartnerApiKey).order_by(PartnerApiKey.key_id)):
            state = (
                "valid"
                if k.expires_at is None
                else f"valid until {k.expires_at:%Y-%m-%d %H:%M}"
                if k.expires_at > now
                else "expired"
            )
            keys.setdefault(k.partner_id, []).append(state)
        return [
            {
                "partner_id": p.partner_id,
                "name": p.name,
                "partner_type": p.partner_type,
                "event_types": p.event_types,
                "may_send_bsn": p.may_send_bsn,
                "active": p.active,
                "keys": keys.get(p.partner_id, []),
            }
            for p in await session.scalars(select(Partner).order_by(Partner.partner_id))
        ]

    partners = _in_transaction(work)
    if as_json:
        typer.echo(json.dumps(partners, indent=2))
        return
    table = Table("partner", "type", "publishes", "BSN", "active", "keys", title="Partners")
    for p in partners:
        table.add_row(
            p["partner_id"],
            p["partner_type"],
            ", ".join(p["event_types"]),
            "yes" if p["may_send_bsn"] else "no",
            "yes" if p["active"] else "no",
            "; ".join(p["keys"]),
        )
    out.print(table)


@partners_app.command("rotate-key")
def rotate(
    partner_id: Annotated[str, typer.Argument(help="Partner id.")],
    overlap_hours: Annotated[
        float,
        typer.Option(min=0, max=24 * 90, help="Hours the current keys keep working."),
    ] = 72,
) -> None:
    """Give a partner a new API key (printed once); the old ones stop after the overlap."""
    from services.ingest.registry import rotate_key
    from services.shared.errors import ConfigurationError

    async def work(session: AsyncSession) -> str:
        return await rotate_key(session, partner_id, dt.timedelta(hours=overlap_hours))

    try:
        key = _in_transaction(work)
    except ConfigurationError as exc:
        refuse(str(exc))
    err.print(
        f"partner {partner_id}: new API key below, shown once; the old key works "
        f"{overlap_hours:g} more hours"
    )
    typer.echo(key)


def _set_active(partner_id: str, active: bool) -> None:
    from services.ingest.registry import set_partner_active

    async def work(session: AsyncSession) -> bool:
        return await set_partner_active(session, partner_id, active)

    if not _in_transaction(work):
        refuse(f"no partner {partner_id!r}")
    out.print(f"partner {partner_id} {'enabled' if active else 'disabled'}")


@partners_app.command()
def disable(partner_id: Annotated[str, typer.Argument(help="Partner id.")]) -> None:
    """Refuse every key of a partner at once (401); its registration stays."""
    _set_active(partner_id, False)


@partners_app.command()
def enable(partner_id: Annotated[str, typer.Argument(help="Partner id.")]) -> None:
    """Accept a disabled partner's valid keys again."""
    _set_active(partner_id, True)
