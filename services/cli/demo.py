"""`hub demo`: the whole hub on this machine, fed one synthetic year of Twente partner events.

Starts the embedded broker (Tansu) and an embedded PostgreSQL unless told to use existing
ones, runs the migrations and creates the topics, starts the three services as processes,
sends the year through the ingest HTTP API, and waits until the notifier has stored every
alert the rules must raise. The expected alerts come from running the same rule engine over
the same events in this process, so the demo also checks the live pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from services.cli.infra import embedded_postgres, tansu_broker
from services.cli.peers import SmtpSink, WebhookReceiver
from services.cli.stack import SERVICES, HubStack, MemberAccount, accounts
from services.cli.synthetic import Generator, SyntheticEvent, municipality_name
from services.ingest.models import MODELS
from services.ingest.records import build_record
from services.matcher.engine import Engine, Household, Outcome
from services.matcher.facts import Fact
from services.matcher.ruleset import DEFAULT_RULES_FILE, load_ruleset
from services.notifier import directory
from services.notifier.directory import FALLBACK_TEAM_ID, ChannelSpec, TeamSpec
from services.shared.config import PseudonymSettings
from services.shared.events import FAMILIES
from services.shared.identity import Pseudonymiser

SEND_CONCURRENCY = 24
ALERT_WAIT_S = 300.0


@dataclass(frozen=True)
class Replayed:
    """One synthetic event as ingest publishes it, and what the matcher made of it."""

    schema_name: str
    record: dict[str, Any]
    outcome: Outcome
    #: The alerts the matcher publishes for this event.
    alerts: list[dict[str, Any]]


def published(
    events: list[SyntheticEvent], pseudonyms: Pseudonymiser, received_at: dt.datetime | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The records ingest publishes for the events: (schema name, record)."""
    for event in events:
        model = MODELS[event.event_type].model_validate(event.body)
        record = build_record(
            model,
            event.partner.partner_id,
            event.partner.partner_type,
            pseudonyms,
            received_at=received_at or dt.datetime.now(dt.UTC),
        )
        yield FAMILIES[event.event_type].schema_name, record


def replay(
    events: list[SyntheticEvent],
    pseudonyms: Pseudonymiser,
    states: dict[str, Household],
    received_at: dt.datetime | None = None,
) -> Iterator[Replayed]:
    """Runs ingest's record building and the matcher's engine (with the baseline rules)
    over the events, in this process; `states` collects each household's matcher state."""
    engine = Engine(load_ruleset(DEFAULT_RULES_FILE).rules)
    for schema_name, record in published(events, pseudonyms, received_at):
        household = record["household_id"]
        state = states.setdefault(household, Household())
        outcome = engine.apply(household, state, Fact.from_event(schema_name, record))
        yield Replayed(
            schema_name, record, outcome, engine.records(household, state, outcome.publish)
        )


def synthetic_rows(
    seed: int, scale: float, progress: Callable[[int], None] | None = None
) -> list[tuple[str, Fact]]:
    """The synthetic year as the matcher sees it, under a throw-away pseudonym secret."""
    events = Generator(seed=seed, scale=scale).events()
    pseudonyms = Pseudonymiser(PseudonymSettings(pseudonym_secret=secrets.token_hex(32)))
    rows = []
    for schema_name, record in published(events, pseudonyms):
        rows.append((record["household_id"], Fact.from_event(schema_name, record)))
        if progress is not None:
            progress(1)
    return rows


def expected_alerts(
    events: list[SyntheticEvent], pseudonyms: Pseudonymiser
) -> dict[str, dict[str, Any]]:
    """Runs the matcher's rule engine over the events here: alert id -> final alert."""
    return {
        alert["alert_id"]: alert for step in replay(events, pseudonyms, {}) for alert in step.alerts
    }


async def _send(
    ingest: str, events: list[SyntheticEvent], keys: dict[str, str], progress: Progress
) -> Counter[str]:
    task = progress.add_task("sending events", total=len(events))
    outcomes: Counter[str] = Counter()
    queue: asyncio.Queue[SyntheticEvent] = asyncio.Queue()
    for event in events:
        queue.put_nowait(event)
    limits = httpx.Limits(max_connections=SEND_CONCURRENCY)
    async with httpx.AsyncClient(base_url=ingest, limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                event = queue.get_nowait()
                while True:
                    response = await client.post(
                        f"/v1/events/{event.event_type.value}",
                        json=event.body,
                        headers={"Authorization": f"Bearer {keys[event.partner.partner_id]}"},
                    )
                    if response.status_code != 429:
                        break
                    # Over the partner's rate limit: wait as told, as a partner system must.
                    outcomes["rate-limited"] += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                # A re-sent event is answered 202 as well, and published once only.
                replayed = response.headers.get("Idempotent-Replayed") == "true"
                code = "duplicate" if replayed else str(response.status_code)
                outcomes[f"{event.event_type.value}:{code}"] += 1
                progress.advance(task)

        await asyncio.gather(*(worker() for _ in range(SEND_CONCURRENCY)))
    return outcomes


async def _wait_for_alerts(
    database_url: str, expected: dict[str, dict[str, Any]], progress: Progress
) -> dict[str, int]:
    """Polls PostgreSQL until every expected alert is stored with all its contributions."""
    want = {a: len(alert["contributions"]) for a, alert in expected.items()}
    task = progress.add_task("alerts stored", total=len(want))
    engine = create_async_engine(database_url)
    try:
        deadline = time.monotonic() + ALERT_WAIT_S
        while True:
            async with engine.connect() as conn:
                rows = await conn.execute(
                    text("select alert_id, count(*) from alert_contributions group by alert_id")
                )
                have = {r[0]: r[1] for r in rows}
            done = sum(1 for a, n in want.items() if have.get(a) == n)
            progress.update(task, completed=done)
            if done == len(want):
                return have
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {len(want)} alerts stored in time")
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()


#: The demo's members: they log in to the inbox with the token the summary prints.
DEMO_TEAMS = ("enschede-schuldhulp", "enschede-wijkteam", FALLBACK_TEAM_ID)


def _demo_directory(hook: WebhookReceiver, hook_secret: str) -> list[TeamSpec]:
    """The seeded directory; Enschede's debt team has a case system's webhook, its wijkteam
    a mailbox, so the demo shows every channel."""
    channels = {
        "enschede-schuldhulp": [
            ChannelSpec(kind="webhook", target=hook.url, secret=SecretStr(hook_secret))
        ],
        "enschede-wijkteam": [ChannelSpec(kind="email", target="wijkteam@enschede.demo")],
    }
    return [
        spec.model_copy(update={"channels": channels.get(spec.team_id, [])})
        for spec in directory.seed()
    ]


async def _wait_for_deliveries(database_url: str, progress: Progress) -> dict[str, dict[str, int]]:
    """Waits until the outbox is empty: every notice delivered or given up."""
    from services.notifier.delivery import delivery_counts

    engine = create_async_engine(database_url)
    task = progress.add_task("deliveries", total=None)
    deadline = time.monotonic() + 600
    try:
        while True:
            async with AsyncSession(engine) as session:
                counts = await delivery_counts(session)
            outbox = {k: v for k, v in counts.items() if k != "inbox"}
            total = sum(sum(c.values()) for c in outbox.values())
            pending = sum(c.get("pending", 0) for c in outbox.values())
            progress.update(task, total=total, completed=total - pending)
            if pending == 0:
                return counts
            if time.monotonic() > deadline:
                raise RuntimeError(f"{pending} deliveries still pending after 10 minutes")
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()


def run_demo(
    *,
    kafka: str | None,
    database_url: str | None,
    seed: int,
    scale: float,
    quiet: bool,
    serve: bool = False,
) -> dict[str, Any]:
    console = Console(stderr=True, quiet=quiet)
    started = time.monotonic()
    generator = Generator(seed, scale)
    events = generator.events()
    keys = {p.partner_id: secrets.token_urlsafe(24) for p in generator.partners}
    pseudonym_secret = secrets.token_urlsafe(32)
    hook_secret = secrets.token_urlsafe(32)
    members = [MemberAccount(t, f"{t}-demo", secrets.token_urlsafe(24)) for t in DEMO_TEAMS]

    with ExitStack() as exit_stack:
        # A case system's webhook and a mail server, on loopback, as the teams' channels.
        hook = exit_stack.enter_context(WebhookReceiver(hook_secret.encode()))
        mail = exit_stack.enter_context(SmtpSink())
        if kafka is None:
            console.print("starting the embedded Kafka-compatible broker (Tansu)")
            kafka = exit_stack.enter_context(tansu_broker())
            idempotent = False
        else:
            idempotent = True
        if database_url is None:
            console.print("starting embedded PostgreSQL")
            database_url = exit_stack.enter_context(embedded_postgres())
        # Service logs stay behind in .hub/demo/ for a look after the run.
        workdir = Path(".hub") / "demo"
        shutil.rmtree(workdir, ignore_errors=True)
        console.print("starting ingest, matcher and notifier")
        stack = exit_stack.enter_context(
            HubStack(
                kafka=kafka,
                database_url=database_url,
                partners=accounts(generator.partners, keys),
                pseudonym_secret=pseudonym_secret,
                topic_prefix=f"demo{seed}x{int(time.time())}",
                workdir=workdir,
                idempotent_producer=idempotent,
                teams=[],
                more_teams=_demo_directory(hook, hook_secret),
                more_members=members,
                extra_env={"HUB_SMTP_HOST": mail.host, "HUB_SMTP_PORT": str(mail.port)},
            )
        )
        ingest, notifier = stack.url("ingest"), stack.url("notifier")
        pseudonyms = Pseudonymiser(PseudonymSettings(pseudonym_secret=pseudonym_secret))
        expected = expected_alerts(events, pseudonyms)
        columns = (
            TextColumn("{task.description:16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=quiet) as progress:
            sending = time.monotonic()
            outcomes = asyncio.run(_send(ingest, events, keys, progress))
            send_seconds = time.monotonic() - sending
            asyncio.run(_wait_for_alerts(database_url, expected, progress))
            deliveries = asyncio.run(_wait_for_deliveries(stack.database_url, progress))
        console.print("privacy scan of every topic, table, log and metric of this run")
        scan = asyncio.run(_privacy_scan(stack, events))
        readyz = httpx.get(f"{stack.url('matcher')}/readyz", timeout=10).json()
        rules = {"ruleset": readyz["ruleset"], "rules": readyz["rules"]}
        inbox = {
            "url": f"{notifier}/inbox",
            "live": serve,
            "logins": [{"member": m.member_id, "token": m.token} for m in members],
        }
        summary = _summary(
            seed=seed,
            events=events,
            outcomes=outcomes,
            generator=generator,
            expected=expected,
            send_seconds=send_seconds,
            started=started,
            notifier=notifier,
            stack=stack,
            rules=rules,
            scan=scan,
            inbox=inbox,
            deliveries=deliveries,
            webhook_accepted=len(hook.accepted),
            mails_received=len(mail.messages),
        )
        if not quiet:
            _print_summary(console, summary)
        if serve:
            _serve_until_interrupted(console, inbox)
    return summary


def _serve_until_interrupted(console: Console, inbox: dict[str, Any]) -> None:
    console.print(
        f"\nThe hub keeps running. Open {inbox['url']} and log in with a token above; "
        "Ctrl-C stops everything."
    )
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


def _summary(
    *,
    seed: int,
    events: list[SyntheticEvent],
    outcomes: dict[str, int],
    generator: Generator,
    expected: dict[str, dict[str, Any]],
    send_seconds: float,
    started: float,
    notifier: str,
    stack: HubStack,
    rules: dict[str, Any],
    scan: dict[str, Any],
    inbox: dict[str, Any],
    deliveries: dict[str, dict[str, int]],
    webhook_accepted: int,
    mails_received: int,
) -> dict[str, Any]:
    per_type: dict[str, dict[str, int]] = {}
    for key, count in outcomes.items():
        event_type, code = key.split(":")
        name = {"202": "accepted", "duplicate": "duplicate"}.get(code, f"http_{code}")
        per_type.setdefault(event_type, {})[name] = count
    summary = {
        "seed": seed,
        "events": per_type,
        "events_total": len(events),
        "partners": len(generator.partners),
        "alerts_total": len(expected),
        "alerts_per_rule": dict(sorted(Counter(a["rule_id"] for a in expected.values()).items())),
        "alerts_per_municipality": dict(
            sorted(
                Counter(
                    municipality_name(a["municipality_code"]) for a in expected.values()
                ).items()
            )
        ),
        "events_per_second_ingested": round(len(events) / send_seconds),
        "elapsed_seconds": round(time.monotonic() - started, 1),
        "team_api": f"{notifier}/v1/alerts",
        # With --kafka and --database-url the data outlives the run: `hub privacy scan` reads
        # it again with HUB_TOPIC_PREFIX and HUB_MATCHER_APP_ID set to these.
        "topic_prefix": stack.topic_prefix,
        "matcher_app_id": stack.hub_settings.matcher_app_id,
        # What the matcher reported on /readyz: the rules file it runs.
        "rules": rules,
        "privacy_scan": scan,
        "inbox": inbox,
        # Per channel, deliveries by status; the inbox counts alerts routed to teams.
        "deliveries": deliveries,
        "received": {"webhook": webhook_accepted, "email": mails_received},
    }
    return summary


async def _privacy_scan(stack: HubStack, events: list[SyntheticEvent]) -> dict[str, Any]:
    """`hub privacy scan` over this run, with real residents' names and BSNs as canaries."""
    from services.privacy.scan import scan_all

    canaries = sorted(
        {e.body["resident"]["name"] for e in events[:50]}
        | {e.body["resident"]["bsn"] for e in events if e.body["resident"].get("bsn")}
    )[:100]
    report = (
        await scan_all(
            stack.hub_settings,
            database_url=stack.database_url,
            log_paths=sorted(stack.workdir.glob("*.log")),
            metrics_urls=[f"{stack.url(s)}/metrics" for s in SERVICES],
            canaries=canaries,
        )
    ).to_json()
    return {
        "findings": report["findings"],
        "canaries": len(canaries),
        "places": len(report["by_place"]),
        "records_scanned": sum(p["scanned"] for p in report["by_place"].values()),
    }


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    from rich.table import Table

    events = Table("event type", "accepted", "other", title="Events")
    for event_type, counts in summary["events"].items():
        other = ", ".join(f"{k}: {v}" for k, v in counts.items() if k != "accepted")
        events.add_row(event_type, str(counts.get("accepted", 0)), other or "-")
    ruleset = summary["rules"]["ruleset"]
    rules = Table(
        "rule",
        "version",
        "alerts",
        title=f"Alerts per rule ({ruleset['name']} {ruleset['version']})",
    )
    versions = summary["rules"]["rules"]
    for rule, count in summary["alerts_per_rule"].items():
        rules.add_row(rule, str(versions.get(rule, "?")), str(count))
    places = Table("municipality", "alerts", title="Alerts per municipality")
    for place, count in summary["alerts_per_municipality"].items():
        places.add_row(place, str(count))
    console.print(events, rules, places)
    console.print(
        f"{summary['alerts_total']} alerts from {summary['events_total']} events in "
        f"{summary['elapsed_seconds']} s "
        f"({summary['events_per_second_ingested']} events/s through ingest)"
    )
    channels = Table("channel", "delivered", "failed", "pending", title="Deliveries per channel")
    for channel, counts in sorted(summary["deliveries"].items()):
        channels.add_row(
            channel,
            str(counts.get("delivered", 0)),
            str(counts.get("failed", 0)),
            str(counts.get("pending", 0)),
        )
    console.print(channels)
    received = summary["received"]
    console.print(
        f"the demo's case system accepted {received['webhook']} webhook notices; "
        f"its mail server received {received['email']} e-mails"
    )
    inbox = summary["inbox"]
    console.print(f"team inbox: {inbox['url']}" + ("" if inbox["live"] else " (with --serve)"))
    for login in inbox["logins"]:
        console.print(f"  {login['member']}: {login['token']}")
    scan = summary["privacy_scan"]
    console.print(
        f"privacy scan: {scan['findings']} findings in {scan['records_scanned']} records, rows, "
        f"lines and metrics of {scan['places']} places ({scan['canaries']} canaries)"
    )
