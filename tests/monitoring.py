"""The PromQL of deploy/: dashboard panel queries and rule expressions, read from the files,
for the unit tests (promtool, metric names) and the live test against a real Prometheus."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
DASHBOARDS_DIR = REPO / "deploy" / "grafana" / "dashboards"
DATASOURCE_UID = "prometheus"
HUB_JOBS = ("hub-ingest", "hub-matcher", "hub-notifier")

ALERT_NAMES = (
    "HubServiceDown",
    "HubConsumerLagGrowing",
    "HubConsumerStalled",
    "HubEventsNotProcessed",
    "HubDeliveriesGivingUp",
    "HubDeadLettersGrowing",
    "HubConsumerLagUnknown",
)


def tool(name: str) -> str:
    """The path of Debian's `promtool` or `prometheus`; a missing one fails the test (the
    Makefile's `debs` target installs them), it never skips it."""
    found = shutil.which(name) or (
        f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None
    )
    assert found, f"{name} is not installed (make debs installs Debian's prometheus)"
    return found


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it is written."""

    file: str
    where: str  # panel title and refId, or rule name
    expr: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.expr}"


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def rule_test_files() -> list[Path]:
    return sorted(RULE_TESTS_DIR.glob("*.yml"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, also those inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries() -> list[Query]:
    found = []
    for path in dashboard_files():
        for panel in panels(json.loads(path.read_text())):
            for target in panel.get("targets", []):
                where = f"panel {panel.get('title')!r} target {target.get('refId')}"
                found.append(Query(path.name, where, target.get("expr", "")))
    return found


def rules() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield path.name, rule


def rule_queries() -> list[Query]:
    """Recording rules' expressions whole; alerting rules' split into their vector operands."""
    found = []
    for file, rule in rules():
        if "record" in rule:
            found.append(Query(file, f"record {rule['record']}", rule["expr"].strip()))
            continue
        for operand in operands(rule["expr"]):
            found.append(Query(file, f"alert {rule['alert']}", operand))
    return found


_SPLIT = re.compile(r"==|!=|>=|<=|>|<|\b(?:and|or|unless)\b")
_OPEN, _CLOSE = "([{", ")]}"
#: What may follow a binary operator before its right operand: `bool`, `on (...)`, ...
_MODIFIERS = re.compile(
    r"^(?:\s*(?:bool\b|(?:on|ignoring)\s*\([^)]*\)|group_(?:left|right)\s*(?:\([^)]*\))?))+"
)


def operands(expr: str) -> list[str]:
    """The operands of `expr` joined at the top level by a comparison, `and`, `or` or
    `unless`, without number literals and without the operators' modifiers (`bool`,
    `on (...)`, `group_left`): `a > 0 unless b > 0` -> [a, b]; `absent(x)` stands for x."""
    parts, depth, start, i = [], 0, 0, 0
    text = " ".join(expr.split())
    while i < len(text):
        char = text[i]
        if char in "\"'`":
            i = text.index(char, i + 1) + 1
            continue
        if char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth -= 1
        elif depth == 0 and (match := _SPLIT.match(text, i)):
            parts.append(text[start:i])
            i = start = match.end()
            continue
        i += 1
    parts.append(text[start:])
    cleaned = (_absent_of(_MODIFIERS.sub("", p.strip()).strip()) for p in parts)
    return [p for p in cleaned if p and not _is_number(p)]


_ABSENT = re.compile(r"^absent\((.*)\)$")


def _absent_of(operand: str) -> str:
    """`absent(x)` answers only while x has no data, so what must have data is x itself."""
    match = _ABSENT.match(operand)
    return match.group(1).strip() if match else operand


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|\{[^}]*\}|\[[^\]]*\]"
)
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf"}
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?!\s*\(|[\w:])")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (not functions, keywords or labels)."""
    bare = _LABEL_LISTS.sub(" ", _STRINGS.sub('""', expr))
    return {n for n in _IDENTIFIER.findall(bare) if n.lower() not in _KEYWORDS}
