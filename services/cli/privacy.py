"""`hub privacy ...`: the privacy officer's commands: scan, purge, erase, access-log, rotate."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from services.shared.logging import configure_logging

if TYPE_CHECKING:
    from services.privacy.commands import CommandSender
    from services.privacy.settings import PrivacySettings

T = TypeVar("T")

privacy_app = typer.Typer(
    help="Privacy: audit scan, retention purge, erasure, access log, secret rotation.",
    no_args_is_help=True,
)
out = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def _settings() -> PrivacySettings:
    from services.privacy.settings import PrivacySettings

    settings = PrivacySettings()
    configure_logging(json=settings.log_json, level=settings.log_level)
    return settings


def _in_transaction(
    settings: PrivacySettings, work: Callable[[AsyncSession, CommandSender], Awaitable[T]]
) -> T:
    """Runs `work(session, sender)` in one transaction, with a producer for matcher commands."""
    from services.privacy.commands import CommandSender
    from services.shared.avro import AvroCodec
    from services.shared.db.engine import make_engine, make_sessionmaker
    from services.shared.kafka import make_producer

    async def run() -> T:
        engine = make_engine(settings)
        producer = make_producer(settings)
        await producer.start()
        try:
            sender = CommandSender(settings, AvroCodec(settings.schemas_dir), producer)
            async with make_sessionmaker(engine)() as session, session.begin():
                return await work(session, sender)
        finally:
            await producer.stop()
            await engine.dispose()

    return asyncio.run(run())


def _emit(report: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    table = Table(title=title, show_header=False)
    for key, value in report.items():
        shown = value if not isinstance(value, list | dict) else json.dumps(value)
        table.add_row(key, str(shown))
    out.print(table)


@privacy_app.command()
def scan(
    as_json: JsonOption = False,
    canary: Annotated[
        list[str] | None,
        typer.Option(help="A value that must be found nowhere (repeatable); also HUB_CANARIES."),
    ] = None,
    logs: Annotated[
        list[Path] | None, typer.Option(help="A log file to read (repeatable).")
    ] = None,
    metrics_url: Annotated[
        list[str] | None, typer.Option(help="A /metrics URL to read (repeatable).")
    ] = None,
) -> None:
    """Report anything on the hub's topics and tables that looks like raw personal data.

    Reads every topic and every table (encrypted columns excepted), plus the given log
    files and metrics endpoints. Exits 1 when anything is found.
    """
    from services.privacy.scan import scan_all

    settings = _settings()
    canaries = [*(canary or []), *filter(None, os.environ.get("HUB_CANARIES", "").split(","))]
    report = asyncio.run(
        scan_all(
            settings,
            database_url=settings.database_url.get_secret_value(),
            log_paths=logs or [],
            metrics_urls=metrics_url or [],
            canaries=canaries,
        )
    ).to_json()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        table = Table(title="Privacy scan")
        for column in ("place", "scanned", "findings", "kinds"):
            table.add_column(column)
        for place, entry in sorted(report["by_place"].items()):
            table.add_row(place, str(entry["scanned"]), str(entry["findings"]), str(entry["kinds"]))
        out.print(table)
        out.print(f"{report['findings']} finding(s)")
    if report["findings"]:
        raise typer.Exit(1)


@privacy_app.command()
def purge(
    as_json: JsonOption = False,
    as_of: Annotated[
        dt.datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Apply retention as on this date (default today)."),
    ] = None,
    every: Annotated[
        float | None,
        typer.Option(min=0.01, help="Repeat every this many hours (a scheduler in one process)."),
    ] = None,
) -> None:
    """Apply the retention policy (docs/privacy.md) once, or on a schedule with --every.

    Expired events stop counting in the matcher, expired alerts lose their personal details,
    and households without live data lose their data key.
    """
    from services.privacy.purge import purge as run_purge

    settings = _settings()

    def once(day: dt.date) -> None:
        report = _in_transaction(settings, lambda s, sender: run_purge(s, sender, settings, day))
        _emit(report.to_json(), as_json, f"Retention purge as of {day}")

    once((as_of or dt.datetime.now(dt.UTC)).date())
    while every is not None:
        asyncio.run(asyncio.sleep(every * 3600))
        once(dt.datetime.now(dt.UTC).date())


@privacy_app.command()
def erase(
    reference: Annotated[
        str, typer.Option(help="The erasure request's case number, kept in the privacy runs.")
    ],
    household: Annotated[
        str | None, typer.Option(help="The household pseudonym (hh<version>-...).")
    ] = None,
    postcode: Annotated[str | None, typer.Option(help="Or find it by address: postcode.")] = None,
    house_number: Annotated[
        str | None, typer.Option(help="House number as written, for example 12a or 12-II.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Erase one household: destroy its data key, delete its rows, tombstone its matcher state."""
    from services.privacy.erase import erase as run_erase
    from services.shared.identity import Pseudonymiser, normalise_address, parse_house_number

    settings = _settings()
    if household is not None:
        ids = [household]
    elif postcode is not None and house_number is not None:
        try:
            number, letter, addition = parse_house_number(house_number)
            address = normalise_address(postcode, number, letter, addition)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        ids = Pseudonymiser(settings).household_versions(address)
    else:
        raise typer.BadParameter("give --household, or --postcode with --house-number")
    report = _in_transaction(settings, lambda s, sender: run_erase(s, sender, ids, reference))
    _emit(report.to_json(), as_json, f"Erasure {reference}")


@privacy_app.command("access-log")
def access_log(
    since: Annotated[
        dt.datetime | None, typer.Option(help="From this moment (ISO date or date-time).")
    ] = None,
    until: Annotated[dt.datetime | None, typer.Option(help="Before this moment.")] = None,
    household: Annotated[str | None, typer.Option(help="Only this household pseudonym.")] = None,
    alert: Annotated[str | None, typer.Option(help="Only this alert id.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Print who viewed which alert's personal details, when, and for what purpose."""
    from services.privacy.access_log import read_access_log
    from services.shared.db.engine import make_engine, make_sessionmaker

    settings = _settings()

    def aware(moment: dt.datetime | None) -> dt.datetime | None:
        return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=dt.UTC)

    async def run() -> list[dict[str, Any]]:
        engine = make_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                return await read_access_log(session, aware(since), aware(until), household, alert)
        finally:
            await engine.dispose()

    entries = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    table = Table(title=f"Access log ({len(entries)} entries)")
    for column in ("at", "member", "team", "alert", "purpose", "domains", "action"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            e["at"],
            e["member_id"],
            e["team_id"],
            e["alert_id"],
            e["purpose"],
            ", ".join(e["domains"]),
            e["action"],
        )
    out.print(table)


@privacy_app.command()
def rotate(as_json: JsonOption = False) -> None:
    """Move every stored household pseudonym to HUB_PSEUDONYM_VERSION (stop ingest first)."""
    from services.privacy.rotate import rotate as run_rotate
    from services.shared.identity import Pseudonymiser

    settings = _settings()
    if settings.pseudonym_version < 2:
        raise typer.BadParameter("HUB_PSEUDONYM_VERSION must be the new version, 2 or higher")
    pseudonyms = Pseudonymiser(settings)
    report = _in_transaction(settings, lambda s, sender: run_rotate(s, sender, pseudonyms))
    _emit(report.to_json(), as_json, f"Pseudonym rotation to version {settings.pseudonym_version}")


@privacy_app.command("new-master-key")
def new_master_key() -> None:
    """Print 32 random bytes in base64, for HUB_MASTER_KEY."""
    typer.echo(base64.b64encode(os.urandom(32)).decode())
