"""Replays history through the matcher's own engine, away from the live alerts.

Rows from the topics go through `Engine.apply` one by one, in the order they were read, as
the matcher's agent does. A file holds each household's events together and in that order;
they go to `Engine.apply_all` at once, which gives the same alerts (rules are monotone; a
property test proves it), except when the household's events span more than the engine's
memory, which then goes one by one too. Nothing is published or stored.

An events file keeps each household's events together and never splits a household over
two blocks, so whole blocks can go to separate processes: that is how `hub backtest` uses
both cores of a small machine.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from services.backtest.events import Block, EventsFile, Row
from services.matcher.engine import (
    DEFAULT_FUTURE_TOLERANCE_DAYS,
    RETENTION_DAYS,
    Engine,
    Household,
)
from services.matcher.facts import Fact
from services.matcher.rules import Rule
from services.shared.errors import DecodeError

#: Below this many events a file is replayed in this process: starting workers costs more.
PARALLEL_FROM = 50_000


@dataclass
class Replayed:
    """What a replay gave: the final version of every alert (`Engine.summary`), and what
    happened to the events."""

    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: int = 0
    counted: int = 0
    duplicates: int = 0
    #: Refused events (event date in the future), by reason.
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, other: Replayed) -> None:
        self.alerts.update(other.alerts)
        self.events += other.events
        self.counted += other.counted
        self.duplicates += other.duplicates
        self.rejected.update(other.rejected)


class _Run:
    def __init__(self, rules: Sequence[Rule], tolerance_days: int) -> None:
        self.engine = Engine(rules, future_tolerance_days=tolerance_days)
        self.result = Replayed()
        #: Alerts published at least once: their final record is built at the end.
        self.published: dict[tuple[str, str], Household] = {}

    def apply(self, household_id: str, household: Household, fact: Fact) -> None:
        result = self.result
        result.events += 1
        outcome = self.engine.apply(household_id, household, fact)
        if outcome.rejected:
            result.rejected[outcome.rejected.split(" (")[0]] += 1
        elif outcome.duplicate:
            result.duplicates += 1
        else:
            result.counted += 1
            for rule_id in outcome.publish:
                self.published[household_id, rule_id] = household

    def apply_all(self, household_id: str, facts: list[Fact]) -> None:
        """A whole household at once; its alerts' final records are kept straight away.

        A household whose events span more than the engine's memory goes one event at a
        time, as in the matcher: forgetting old facts then depends on the order.
        """
        if len(facts) > 1 and _span_days(facts) > RETENTION_DAYS:
            household = Household()
            for fact in facts:
                self.apply(household_id, household, fact)
            for rule_id in household.open:
                if self.published.pop((household_id, rule_id), None) is not None:
                    self._keep(household_id, household, rule_id)
            return
        household = Household()
        outcome, refused = self.engine.apply_all(household_id, household, facts)
        result = self.result
        result.events += len(facts)
        result.counted += len(facts) - len(refused)
        for verdict in refused:
            if verdict.rejected:
                result.rejected[verdict.rejected.split(" (")[0]] += 1
            elif verdict.duplicate:
                result.duplicates += 1
        for rule_id in outcome.publish:
            self._keep(household_id, household, rule_id)

    def finish(self) -> Replayed:
        for (household_id, rule_id), household in self.published.items():
            self._keep(household_id, household, rule_id)
        return self.result

    def _keep(self, household_id: str, household: Household, rule_id: str) -> None:
        summary = self.engine.summary(household_id, household, rule_id)
        if summary is not None:
            self.result.alerts[summary["alert_id"]] = summary


def _span_days(facts: list[Fact]) -> int:
    dates = [f.event_date for f in facts]
    return (max(dates) - min(dates)).days


def replay_rows(
    rules: Sequence[Rule],
    rows: Iterable[Row],
    tolerance_days: int = DEFAULT_FUTURE_TOLERANCE_DAYS,
    progress: Callable[[int], None] | None = None,
) -> Replayed:
    """Replays rows in any order (a topic, interleaved households), in this process."""
    with _no_cycle_collection():
        return _replay_rows(rules, rows, tolerance_days, progress)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Households hold no reference cycles, but the collector would walk every one of them
    again and again as they pile up: a quarter of the run's time, for nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _replay_rows(
    rules: Sequence[Rule],
    rows: Iterable[Row],
    tolerance_days: int,
    progress: Callable[[int], None] | None,
) -> Replayed:
    run = _Run(rules, tolerance_days)
    households: dict[str, Household] = {}
    for n, (household_id, fact) in enumerate(rows, start=1):
        household = households.get(household_id)
        if household is None:
            household = households[household_id] = Household()
        run.apply(household_id, household, fact)
        if progress is not None and n % 10_000 == 0:
            progress(10_000)
    if progress is not None:
        progress(run.result.events % 10_000)
    return run.finish()


def _replay_blocks(
    path: Path, blocks: Sequence[Block], rules: Sequence[Rule], tolerance_days: int
) -> Replayed:
    """One worker's share: consecutive blocks, which hold whole households one after the
    other. Each household's events go to the engine together (`Engine.apply_all`)."""
    with _no_cycle_collection():
        run = _Run(rules, tolerance_days)
        finished: set[str] = set()
        for household_id, rows in groupby(EventsFile(path).rows(blocks), key=itemgetter(0)):
            if household_id in finished:
                raise DecodeError(
                    f"{path.name}: a household's events are not together; "
                    "write the file with `hub export events`"
                )
            finished.add(household_id)
            run.apply_all(household_id, [fact for _, fact in rows])
        return run.finish()


def replay_file(
    rules: Sequence[Rule],
    events: EventsFile,
    workers: int | None = None,
    tolerance_days: int = DEFAULT_FUTURE_TOLERANCE_DAYS,
    progress: Callable[[int], None] | None = None,
    parallel_from: int = PARALLEL_FROM,
) -> Replayed:
    """Replays an events file, over `workers` processes (default: one per core) when it
    holds at least `parallel_from` events."""
    blocks = events.blocks()
    total = sum(b.events for b in blocks)
    workers = workers or os.cpu_count() or 1
    if workers == 1 or total < parallel_from:
        result = _replay_blocks(events.path, blocks, rules, tolerance_days)
        if progress is not None:
            progress(result.events)
        return result
    result = Replayed()
    context = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [
            pool.submit(_replay_blocks, events.path, share, rules, tolerance_days)
            for share in _shares(blocks, workers * 4)
        ]
        for future in as_completed(futures):
            part = future.result()
            result.add(part)
            if progress is not None:
                progress(part.events)
    return result


def _start_method() -> str:
    """fork when this process runs no other thread: a worker starts in milliseconds with the
    modules already loaded. Otherwise spawn, since a forked child inherits other threads'
    locks in whatever state they are; it costs each worker a second of imports."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


def _shares(blocks: Sequence[Block], count: int) -> list[list[Block]]:
    """Splits the blocks into about `count` runs of consecutive blocks with similar totals."""
    target = max(1, sum(b.events for b in blocks) // count)
    shares: list[list[Block]] = [[]]
    size = 0
    for block in blocks:
        if size >= target:
            shares.append([])
            size = 0
        shares[-1].append(block)
        size += block.events
    return [s for s in shares if s]
