"""`hub rules check|schema`, `hub backtest` and `hub export events`: the data team's commands.

A rules change goes: edit the YAML, `hub rules check` it (validation and the examples in
it), `hub backtest` it against the events the topics still hold (or an export of them) and
`--compare` it with the rules in use, then deploy it to the matcher (`HUB_MATCHER_RULES_FILE`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.matcher.engine import DEFAULT_FUTURE_TOLERANCE_DAYS
from services.matcher.ruleset import RuleSet, RulesFileError, load_ruleset
from services.shared.errors import DecodeError

if TYPE_CHECKING:
    from services.backtest.events import EventsFile, Row
    from services.backtest.replay import Replayed

rules_app = typer.Typer(help="Correlation rules files: check them, publish their schema.")
export_app = typer.Typer(help="Export what the hub holds, for analysis and back-testing.")
out = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
SCHEMA_FILE = Path("docs/rules.schema.json")


def _load(path: Path, as_json: bool = False) -> RuleSet:
    try:
        return load_ruleset(path)
    except RulesFileError as exc:
        if as_json:
            typer.echo(json.dumps({"file": str(path), "passed": False, "problems": exc.problems}))
        for problem in exc.problems:
            err.print(problem, markup=False, highlight=False)
        err.print(f"[red]{path} refused[/red]: {len(exc.problems)} problem(s)")
        raise typer.Exit(2) from None


@rules_app.command("check")
def rules_check(
    file: Annotated[Path, typer.Argument(help="The rules file (YAML).")],
    as_json: JsonOption = False,
) -> None:
    """Validate a rules file and run the examples in it; exit 1 when an example fails,
    2 when the file is refused."""
    from services.matcher.ruleset import run_examples

    ruleset = _load(file, as_json)
    results = run_examples(ruleset)
    failed = [r for r in results if not r.passed]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "file": str(file),
                    "ruleset": ruleset.name,
                    "version": ruleset.version,
                    "sha256": ruleset.digest,
                    "rules": ruleset.versions(),
                    "examples": [
                        {"rule": r.rule_id, "name": r.name, "problems": r.problems} for r in results
                    ],
                    "passed": not failed,
                },
                indent=2,
            )
        )
    else:
        table = Table(title=f"{ruleset.label} ({file})")
        for column in ("rule", "version", "purpose", "priority", "condition", "examples"):
            table.add_column(column)
        for rule in ruleset.rules:
            mine = [r for r in results if r.rule_id == rule.id]
            passed = sum(r.passed for r in mine)
            table.add_row(
                rule.id,
                str(rule.version),
                rule.purpose,
                rule.priority,
                rule.condition_text,
                f"{passed}/{len(mine)}",
            )
        out.print(table)
        for result in failed:
            for problem in result.problems:
                err.print(f"[red]FAILED[/red] {result.rule_id}: {result.name}: {problem}")
    if failed:
        raise typer.Exit(1)


@rules_app.command("schema")
def rules_schema(
    output: Annotated[
        Path | None, typer.Option(help=f"Write it here (the published copy is {SCHEMA_FILE}).")
    ] = None,
) -> None:
    """Print the JSON schema of a rules file, or write it to a file."""
    from services.matcher.ruleset import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")


def _when(value: str | None, option: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date or time (use 2025-01-01 or 2025-01-01T00:00)",
            param_hint=option,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


SinceOption = Annotated[
    str | None,
    typer.Option(help="Topics only: from records published at or after this time (ISO)."),
]
UntilOption = Annotated[
    str | None, typer.Option(help="Topics only: up to records published before this time (ISO).")
]
StartOption = Annotated[
    int | None, typer.Option(min=0, help="Topics only: from this offset in every partition.")
]
EndOption = Annotated[
    int | None, typer.Option(min=0, help="Topics only: up to this offset in every partition.")
]


@contextmanager
def _progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, redrawn as work is reported rather than by a thread of its
    own: with no other thread running, the back-test can fork its workers safely."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        auto_refresh=False,
    ) as progress:
        task = progress.add_task(description, total=total)
        drawn = time.monotonic()

        def advance(n: int) -> None:
            nonlocal drawn
            progress.advance(task, n)
            if time.monotonic() - drawn > 0.1:
                progress.refresh()
                drawn = time.monotonic()

        yield advance


def _topic_rows(
    since: str | None, until: str | None, start: int | None, end: int | None
) -> list[Row]:
    from services.backtest.events import TopicRange, topic_rows
    from services.shared.config import HubSettings

    selection = TopicRange(_when(since, "--since"), _when(until, "--until"), start, end)
    settings = HubSettings()

    async def read() -> list[Row]:
        rows: list[Row] = []
        with _progress("reading the source topics", None) as advance:
            async for row in topic_rows(settings, selection):
                rows.append(row)
                advance(1)
        return rows

    try:
        return asyncio.run(read())
    except KafkaError as exc:
        err.print(f"[red]cannot read the source topics at {settings.kafka_bootstrap}[/red]: {exc}")
        raise typer.Exit(1) from None
    except DecodeError as exc:
        err.print(f"[red]{exc}[/red] (HUB_TOPIC_PREFIX)")
        raise typer.Exit(1) from None


def backtest(
    rules: Annotated[Path, typer.Option(help="The rules file to test (YAML).")],
    events: Annotated[
        str,
        typer.Option(
            help="An events file from `hub export events`, or `kafka` for the hub's source "
            "topics (HUB_KAFKA_BOOTSTRAP, HUB_TOPIC_PREFIX)."
        ),
    ],
    compare: Annotated[
        Path | None, typer.Option(help="Another rules file (usually the one in use) to compare.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write a PNG chart of alerts per month per rule here.")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    start_offset: StartOption = None,
    end_offset: EndOption = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes for a file (default: one per core).")
    ] = None,
    future_tolerance_days: Annotated[
        int,
        typer.Option(
            min=0,
            max=30,
            envvar="HUB_FUTURE_TOLERANCE_DAYS",
            help="Refuse events dated more days after their receipt, as the matcher does.",
        ),
    ] = DEFAULT_FUTURE_TOLERANCE_DAYS,
    as_json: JsonOption = False,
) -> None:
    """Replay history through a rules file, with the matcher's own engine, and report the
    alerts it would have raised: per rule, municipality and month, and the overlap between
    rules. Live alerts are not touched: nothing is published or stored."""
    from services.backtest.report import Comparison, Report, render

    ruleset = _load(rules)
    other = _load(compare) if compare is not None else None
    if plot is not None and not plot.parent.is_dir():
        raise typer.BadParameter(f"{plot.parent}: no such directory", param_hint="--plot")
    from_topics = events == "kafka"
    if not from_topics and (since or until or start_offset is not None or end_offset is not None):
        raise typer.BadParameter("only for --events kafka", param_hint="--since/--until/offsets")
    if from_topics:
        rows = _topic_rows(since, until, start_offset, end_offset)
        source = f"kafka ({len(rows)} events)"
        replays = [_replay_rows(rs, rows, future_tolerance_days) for rs in (ruleset, other) if rs]
    else:
        file = _events_file(events)
        source = events
        try:
            replays = [
                _replay_file(rs, file, workers, future_tolerance_days)
                for rs in (ruleset, other)
                if rs
            ]
        except (DecodeError, ValueError, EOFError) as exc:
            raise typer.BadParameter(
                f"{events}: cannot be read to the end ({type(exc).__name__}: {exc})",
                param_hint="--events",
            ) from None
    reports = [
        Report.from_alerts(
            replayed.alerts.values(),
            # The file's name too: a changed copy often keeps the name and version inside.
            ruleset=f"{rs.label} ({rs.path.name})",
            rule_ids=[r.id for r in rs.rules],
            events=replayed.events,
            seconds=seconds,
        )
        for rs, (replayed, seconds) in zip(
            [ruleset, *([other] if other else [])], replays, strict=True
        )
    ]
    comparison = Comparison.between(reports[1], reports[0]) if other is not None else None
    if plot is not None:
        from services.backtest.plot import write_plot

        write_plot(reports[0], plot, reports[1] if other is not None else None)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "source": source,
                    "rules": {"file": str(rules), "sha256": ruleset.digest},
                    "events": _event_counts(replays[0][0]),
                    "report": reports[0].to_json(),
                    "compare": reports[1].to_json() if other is not None else None,
                    "comparison": comparison.to_json() if comparison is not None else None,
                    "plot": str(plot) if plot is not None else None,
                },
                indent=2,
            )
        )
        return
    render(reports[0], out, comparison)
    counts = _event_counts(replays[0][0])
    err.print(
        f"{counts['read']} events from {source}: {counts['counted']} counted, "
        f"{counts['duplicates']} re-sent, {counts['refused']} refused (future); "
        f"{reports[0].events_per_second or 0:,.0f} events/s"
    )
    if plot is not None:
        err.print(f"chart written to {plot}")


def _events_file(name: str) -> EventsFile:
    """The file, once its header and batch index have been read: refused here if it is no
    events file, rather than halfway through the replay."""
    from services.backtest.events import EventsFile

    path = Path(name)
    if not path.is_file():
        raise typer.BadParameter(f"{name}: no such file", param_hint="--events")
    file = EventsFile(path)
    try:
        file.blocks()
    except (DecodeError, ValueError, EOFError) as exc:
        raise typer.BadParameter(
            f"{name}: not an events file written by `hub export events` ({exc})",
            param_hint="--events",
        ) from None
    return file


def _event_counts(replayed: Replayed) -> dict[str, Any]:
    return {
        "read": replayed.events,
        "counted": replayed.counted,
        "duplicates": replayed.duplicates,
        "refused": sum(replayed.rejected.values()),
        "refused_by_reason": dict(replayed.rejected),
    }


def _replay_file(
    ruleset: RuleSet, file: EventsFile, workers: int | None, tolerance_days: int
) -> tuple[Replayed, float]:
    from services.backtest.replay import replay_file

    total = sum(b.events for b in file.blocks())
    with _progress(f"replaying {ruleset.label}", total) as advance:
        started = time.perf_counter()
        replayed = replay_file(
            ruleset.rules, file, workers=workers, tolerance_days=tolerance_days, progress=advance
        )
        return replayed, time.perf_counter() - started


def _replay_rows(ruleset: RuleSet, rows: list[Row], tolerance_days: int) -> tuple[Replayed, float]:
    from services.backtest.replay import replay_rows

    with _progress(f"replaying {ruleset.label}", len(rows)) as advance:
        started = time.perf_counter()
        replayed = replay_rows(ruleset.rules, rows, tolerance_days, progress=advance)
        return replayed, time.perf_counter() - started


@export_app.command("events")
def export_events(
    output: Annotated[Path, typer.Argument(help="The file to write (Avro container).")],
    since: SinceOption = None,
    until: UntilOption = None,
    start_offset: StartOption = None,
    end_offset: EndOption = None,
    synthetic: Annotated[
        bool,
        typer.Option(
            help="Instead of the topics: the demo's synthetic year (no broker needed), "
            "for trying rules and measuring the back-test."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="--synthetic: seed of the year.")] = 2026,
    scale: Annotated[
        float, typer.Option(min=0.001, max=100.0, help="--synthetic: size, 1 = one year.")
    ] = 1.0,
    as_json: JsonOption = False,
) -> None:
    """Write the source events the rules read (no personal details) to a file that
    `hub backtest --events FILE` replays."""
    from services.backtest.events import write_events
    from services.shared.config import HubSettings

    if not output.parent.is_dir():
        raise typer.BadParameter(f"{output.parent}: no such directory", param_hint="OUTPUT")
    settings = HubSettings()
    if synthetic:
        if since or until or start_offset is not None or end_offset is not None:
            raise typer.BadParameter(
                "a synthetic year has no topics to select from",
                param_hint="--since/--until/offsets",
            )
        rows = _synthetic_rows(seed, scale)
        metadata = {"source": "synthetic", "seed": str(seed), "scale": str(scale)}
    else:
        rows = _topic_rows(since, until, start_offset, end_offset)
        metadata = {
            "source": "kafka",
            "topic_prefix": settings.topic_prefix,
            "since": since or "",
            "until": until or "",
        }
    metadata["exported_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    # Written next to the target and renamed: a failed export leaves no half a file.
    partial = output.with_name(output.name + ".partial")
    with partial.open("wb") as stream:
        count = write_events(stream, rows, metadata, settings.schemas_dir / "event-export.v1.avsc")
    partial.replace(output)
    households = len({h for h, _ in rows})
    if as_json:
        typer.echo(json.dumps({"file": str(output), "events": count, "households": households}))
    else:
        err.print(f"wrote {count} events of {households} households to {output}")


def _synthetic_rows(seed: int, scale: float) -> list[Row]:
    from services.cli.demo import synthetic_rows

    with _progress("building the synthetic year", None) as advance:
        return synthetic_rows(seed, scale, advance)
