"""The backtest chart: alerts per month per rule, optionally against a second rule file.

matplotlib is imported inside the functions: it costs a noticeable part of a second and
`hub` starts for every command. The figure draws on its own Agg canvas, so no backend is
selected and pyplot's global state is never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from services.backtest.report import Report, month_span

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class _Style:
    linestyle: Literal["-", "--"]
    linewidth: float
    alpha: float


_ALONE = _Style("-", 2.0, 1.0)
# A line drawn dashed over an equal solid one would vanish; the wider, paler solid line
# keeps both visible where two rule files agree.
_SOLID = _Style("-", 2.4, 0.55)
_DASHED = _Style("--", 1.6, 1.0)
# Labels are plain text: a "$" in a ruleset name must not start matplotlib's mathtext.
_PLAIN = str.maketrans({"$": r"\$"})


def write_plot(report: Report, path: Path, comparison: Report | None = None) -> None:
    """Writes the chart of `draw` to `path` as PNG, whatever the file name ends in."""
    draw(report, comparison).savefig(path, format="png", dpi=100)


def draw(report: Report, comparison: Report | None = None) -> Figure:
    """One line per rule over every month of either report; `comparison`'s lines dashed.

    A rule keeps its colour in both reports, so solid and dashed lines of one colour are
    the same rule under the two rule files.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    reports = [report] if comparison is None else [report, comparison]
    months = month_span(m for r in reports for m in r.months)
    rule_ids = tuple(dict.fromkeys(rule for r in reports for rule in r.rule_ids))
    colours = _colours(rule_ids)
    figure = Figure(figsize=(12, max(5.0, 1.5 + 0.3 * len(rule_ids))), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    styles = (_ALONE,) if comparison is None else (_SOLID, _DASHED)
    for drawn, style in zip(reports, styles, strict=True):
        _lines(axes, drawn, months, colours, style)
    _label_axes(axes, months, _title(report, comparison))
    _legend(figure, colours, report, comparison)
    return figure


def _colours(rule_ids: tuple[str, ...]) -> dict[str, str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = colormaps["tab10" if len(rule_ids) <= 10 else "tab20"]
    return {rule: to_hex(palette(i % palette.N)) for i, rule in enumerate(rule_ids)}


def _lines(
    axes: Axes,
    report: Report,
    months: tuple[str, ...],
    colours: dict[str, str],
    style: _Style,
) -> None:
    positions = range(len(months))
    for rule in report.rule_ids:
        counts = [report.per_month[rule].get(month, 0) for month in months]
        label = f"{rule} ({report.ruleset})".translate(_PLAIN)
        axes.plot(
            positions,
            counts,
            color=colours[rule],
            label=label,
            marker="o",
            linestyle=style.linestyle,
            linewidth=style.linewidth,
            alpha=style.alpha,
        )


def _label_axes(axes: Axes, months: tuple[str, ...], title: str) -> None:
    from matplotlib.ticker import MaxNLocator

    # Every month labelled up to two years; beyond that every second, third, ... month.
    step = max(1, math.ceil(len(months) / 24))
    ticks = range(0, len(months), step)
    axes.set_xticks(list(ticks), [months[i] for i in ticks], rotation=45, ha="right")
    axes.set_xlabel("month the alert was raised")
    axes.set_ylabel("alerts")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    # From 0 up, and at least to 1 so a chart without alerts gets no fractional ticks.
    axes.set_ylim(0, max(1.0, axes.get_ylim()[1]))
    axes.grid(axis="y", alpha=0.3)
    axes.set_title(title.translate(_PLAIN))
    if not months:
        axes.text(0.5, 0.5, "no alerts", transform=axes.transAxes, ha="center", va="center")


def _title(report: Report, comparison: Report | None) -> str:
    if comparison is None:
        return f"Alerts per month, {report.ruleset}"
    return f"Alerts per month, {report.ruleset} (solid) vs {comparison.ruleset} (dashed)"


def _legend(
    figure: Figure, colours: dict[str, str], report: Report, comparison: Report | None
) -> None:
    """One entry per rule colour, and with a comparison one per line style: short and clear."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=rule.translate(_PLAIN)) for rule, c in colours.items()]
    if comparison is not None:
        for drawn, style in ((report, _SOLID), (comparison, _DASHED)):
            label = drawn.ruleset.translate(_PLAIN)
            line = Line2D([], [], color="grey", label=label, linestyle=style.linestyle)
            handles.append(line)
    if handles:
        figure.legend(handles=handles, loc="outside right upper")
