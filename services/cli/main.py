"""The `hub` command: run a service, create topics, migrate the database, run the demo."""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from services.cli.deadletter import deadletter_app
from services.cli.partners import partners_app
from services.cli.privacy import privacy_app
from services.cli.rules import backtest, export_app, rules_app
from services.cli.teams import deliveries_app, teams_app
from services.ingest.metrics import CHANNELS
from services.shared.config import DatabaseSettings, HubSettings
from services.shared.logging import configure_logging, stdlib_logging_config

if TYPE_CHECKING:
    from fastapi import FastAPI

# Tracebacks without local variables: a command's arguments can be an address (erase).
app = typer.Typer(
    help="Twente household signal hub.", no_args_is_help=True, pretty_exceptions_show_locals=False
)
topics_app = typer.Typer(help="Kafka topics of the hub.", no_args_is_help=True)
db_app = typer.Typer(help="The hub's PostgreSQL database.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")
app.add_typer(privacy_app, name="privacy")
app.add_typer(rules_app, name="rules")
app.add_typer(export_app, name="export")
app.add_typer(teams_app, name="teams")
app.add_typer(partners_app, name="partners")
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(deadletter_app, name="deadletter")
app.command()(backtest)
err = Console(stderr=True)


class Service(StrEnum):
    ingest = "ingest"
    matcher = "matcher"
    notifier = "notifier"


@app.command()
def run(service: Service) -> None:
    """Run one service in the foreground until it is stopped."""
    if service is Service.matcher:
        from services.matcher.app import create_app as create_matcher
        from services.matcher.settings import MatcherSettings

        matcher_settings = MatcherSettings()
        configure_logging(json=matcher_settings.log_json, level=matcher_settings.log_level)
        import faust

        # Faust's worker sets up the standard library's logging itself: with ours, so its
        # lines are structlog's too, and without its banner in a JSON log.
        worker = faust.Worker(
            create_matcher(matcher_settings),
            loglevel=matcher_settings.log_level.lower(),
            logging_config=stdlib_logging_config(
                json=matcher_settings.log_json, level=matcher_settings.log_level
            ),
            quiet=matcher_settings.log_json,
        )
        worker.execute_from_commandline()
        return

    if service is Service.ingest:
        from services.ingest.app import create_app as create_ingest
        from services.ingest.settings import IngestSettings

        ingest_settings = IngestSettings()
        _serve(
            ingest_settings,
            create_ingest(ingest_settings),
            ingest_settings.ingest_host,
            ingest_settings.ingest_port,
        )
    else:
        from services.notifier.api import create_app as create_notifier
        from services.notifier.settings import NotifierSettings

        notifier_settings = NotifierSettings()
        _serve(
            notifier_settings,
            create_notifier(notifier_settings),
            notifier_settings.notifier_host,
            notifier_settings.notifier_port,
        )


def _serve(settings: HubSettings, asgi_app: FastAPI, host: str, port: int) -> None:
    import uvicorn

    configure_logging(json=settings.log_json, level=settings.log_level)
    # log_config=None: uvicorn keeps to the logging configured above (JSON lines) instead of
    # putting plain-text handlers of its own on its loggers.
    uvicorn.run(
        asgi_app, host=host, port=port, log_level="warning", access_log=False, log_config=None
    )


@topics_app.command("create")
def topics_create(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Create the hub's topics with their partition counts and retention (idempotent)."""
    from services.shared.topics import create_topics, topic_specs

    settings = HubSettings()
    created = asyncio.run(create_topics(settings))
    if as_json:
        typer.echo(
            json.dumps({"created": created, "topics": [s.name for s in topic_specs(settings)]})
        )
    else:
        for spec in topic_specs(settings):
            mark = "created" if spec.name in created else "exists"
            err.print(f"{spec.name:40} {spec.partitions:>3} partitions  {mark}")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the Alembic migrations to the database in HUB_DATABASE_URL."""
    from services.shared.db.migrate import upgrade

    upgrade(DatabaseSettings(), revision)
    err.print(f"database at revision {revision}")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the overview as JSON.")] = False,
) -> None:
    """Topics, consumer lag per partition, events per minute, open and overdue alerts per
    municipality, delivery failures. Exits 1 when Kafka or the database cannot be read."""
    from dataclasses import asdict

    from services.cli.status import StatusSettings, read_status, show

    found = asyncio.run(read_status(StatusSettings()))
    if as_json:
        typer.echo(json.dumps(asdict(found), indent=2))
    else:
        show(found, Console())
    if found.problems:
        raise typer.Exit(1)


KafkaOption = Annotated[
    str | None,
    typer.Option(help="Use this Kafka (HOST:PORT) instead of starting the embedded broker."),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(help="Use this PostgreSQL (SQLAlchemy asyncpg URL) instead of an embedded one."),
]


@app.command()
def demo(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout.")
    ] = False,
    kafka: KafkaOption = None,
    database_url: DatabaseUrlOption = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the synthetic year; the same seed gives the same alerts.")
    ] = 2026,
    scale: Annotated[
        float, typer.Option(min=0.001, max=10.0, help="Fraction of a full synthetic year to send.")
    ] = 1.0,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve", help="Keep the hub running afterwards, for the inbox, until Ctrl-C."
        ),
    ] = False,
) -> None:
    """Start everything, send one synthetic year of Twente partner events, print what came out."""
    from services.cli.demo import run_demo

    summary = run_demo(
        kafka=kafka,
        database_url=database_url,
        seed=seed,
        scale=scale,
        quiet=as_json,
        serve=serve,
    )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))


bench_app = typer.Typer(help="Measure the hub on this machine.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _known_ways(ways: list[str] | None) -> list[str] | None:
    for way in ways or []:
        if way not in CHANNELS:
            raise typer.BadParameter(f"{way!r} is none of {', '.join(CHANNELS)}")
    return ways


@bench_app.command("ingest")
def bench_ingest(
    events: Annotated[
        int, typer.Option(min=100, max=200_000, help="Events sent through each way in.")
    ] = 5000,
    kafka: KafkaOption = None,
    database_url: DatabaseUrlOption = None,
    way: Annotated[
        list[str] | None,
        typer.Option(
            callback=_known_ways,
            help=f"Only this way in: {', '.join(CHANNELS)} (repeatable); all four when not given.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Send the same events one at a time, in batches, as a CSV file and through the Kafka
    intake; print events per second (and as a ratio to one at a time, when that way ran) and
    ingest's peak memory growth for each way, each way warmed up first."""
    from rich.table import Table

    from services.cli.bench import run_bench

    results = run_bench(kafka=kafka, database_url=database_url, events=events, ways=way or CHANNELS)
    base = next((r.per_second for r in results if r.way == "http"), None)
    figures = [
        {
            "way": r.way,
            "events": r.events,
            "seconds": round(r.seconds, 1),
            "events_per_second": round(r.per_second),
            "ratio_to_http": None if base is None else round(r.per_second / base, 1),
            "peak_rss_growth_mib": round(r.peak_rss_growth_mib, 1),
        }
        for r in results
    ]
    if as_json:
        typer.echo(json.dumps(figures, indent=2))
        return
    table = Table("way", "events", "seconds", "events/s", "x one at a time", "peak RSS +MiB")
    for f in figures:
        table.add_row(*("" if v is None else str(v) for v in f.values()))
    Console().print(table)


if __name__ == "__main__":
    app()
