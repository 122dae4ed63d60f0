"""The rules file: YAML the regional data team edits, validated by pydantic, line by line.

`load_ruleset(path)` reads a file such as `rules/baseline.yaml` and gives the `Rule`s the
matcher and `hub backtest` run. A file that is not valid is refused as a whole with
every fault: the line, the field path and what is wrong. `docs/rules.schema.json` is this
module's JSON schema (`hub rules schema` writes it). Each rule may carry examples: event
sequences with the alerts they must give, run by `hub rules check`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.matcher.engine import RETENTION_DAYS, Engine, Household
from services.matcher.facts import Fact
from services.matcher.rules import (
    PLACEHOLDERS,
    Condition,
    Deadline,
    DeadlineWhen,
    Filter,
    Rule,
)
from services.shared.config import REPO_ROOT
from services.shared.errors import ConfigurationError
from services.shared.events import FAMILIES, CreditorType, Domain, EventType
from services.shared.identity import event_id
from services.shared.outcomes import KnownOutcome
from services.shared.purposes import check_rule

DEFAULT_RULES_FILE = REPO_ROOT / "rules" / "baseline.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeadlineSpec(_Strict):
    amount: int = Field(ge=1, le=365, description="How many days.")
    unit: Literal["calendar-days", "working-days"] = Field(
        "calendar-days",
        description="Working days skip weekends and Dutch public holidays (Algemene termijnenwet).",
    )
    because: str = Field("", description="Why, for the worker: the article of law it follows.")

    def compile(self) -> Deadline:
        return Deadline(self.amount, self.unit == "working-days", self.because)


class DeadlineWhenSpec(_Strict):
    domain: Domain = Field(description="When an event of this domain contributes ...")
    deadline: DeadlineSpec = Field(description="... this deadline replaces the rule's own.")


class SelectSpec(_Strict):
    """Which of the household's events the rule reads, within its sources."""

    event_types: list[EventType] = Field(default_factory=list, description="Empty: all types.")
    creditor_types: list[CreditorType] = Field(
        default_factory=list, description="Debt signals of these creditor types only."
    )
    min_amount_eur: int | None = Field(
        None, ge=0, description="Debt signals of at least this amount only."
    )
    crisis: bool | None = Field(
        None, description="true: crisis signals only; false: signals without the crisis flag."
    )


class ConditionSpec(_Strict):
    window_days: int = Field(
        0,
        ge=0,
        le=RETENTION_DAYS,
        description="Events count together when their event dates lie within this many days "
        "of each other (event time, not arrival time); 0: on the same day.",
    )
    min_events: int = Field(1, ge=1, le=100)
    min_creditors: int = Field(0, ge=0, le=100, description="Distinct creditors (debt).")
    min_domains: int = Field(0, ge=0, le=len(Domain), description="Distinct domains.")


class EventStep(_Strict):
    """One event of an example, as the rule sees it (no personal details)."""

    type: EventType
    date: dt.date
    received: dt.date | None = Field(None, description="Day of receipt; default: the date.")
    creditor: str | None = Field(None, description="Creditor's name (debt signals).")
    creditor_type: CreditorType | None = None
    amount_eur: int | None = Field(None, ge=0)
    crisis: bool = False
    municipality: str = Field("GM0153", pattern=r"^GM\d{4}$")


class CloseStep(_Strict):
    """The team closes the rule's open alert (an outcome recorded in the inbox)."""

    close: dt.date
    outcome: KnownOutcome = Field("hulp-gestart", description="One of the fixed outcomes.")


class ExpectedAlert(_Strict):
    episode: int = Field(1, ge=1)
    raised_on: dt.date | None = None
    deadline: dt.date | None = None
    events: list[int] | None = Field(
        None, description="The contributing events, by their position in the example (1 = first)."
    )


class ExampleSpec(_Strict):
    name: str = Field(min_length=1)
    steps: list[Annotated[EventStep | CloseStep, Field(union_mode="left_to_right")]] = Field(
        min_length=1
    )
    expect: list[ExpectedAlert] = Field(
        description="Every alert the steps give, by episode; an empty list: no alert."
    )


class RuleSpec(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9-]{1,40}$")
    version: int = Field(ge=1, description="Raise it with every change; alerts carry it.")
    title: str = Field(min_length=1)
    purpose: str = Field(
        description="A purpose of DESIGN.md §3: debt-help, care, integrated-approach."
    )
    legal_basis: str = Field(min_length=1)
    sources: list[Domain] = Field(
        min_length=1, description="The domains the rule may read; its purpose must allow them."
    )
    select: SelectSpec = Field(default_factory=SelectSpec)
    condition: ConditionSpec
    priority: Literal["NORMAL", "HIGH", "URGENT"]
    deadline: DeadlineSpec
    deadline_when: list[DeadlineWhenSpec] = Field(default_factory=list)
    cooldown_days: int = Field(
        30, ge=0, le=365, description="After a closed alert, how long the rule stays quiet."
    )
    undisclosed_domains: Literal["mention", "hide"] = Field(
        "hide", description="How a domain a team may not see appears to it."
    )
    explanation: str = Field(min_length=1, description="Dutch text for the wijkteam worker.")
    examples: list[ExampleSpec] = Field(default_factory=list)

    @field_validator("explanation")
    @classmethod
    def _known_placeholders(cls, text: str) -> str:
        try:
            fields = [(n, spec, conv) for _, n, spec, conv in string.Formatter().parse(text)]
        except ValueError as exc:
            raise ValueError(f"not a valid text with placeholders: {exc}") from None
        used = {name for name, _, _ in fields if name is not None}
        formatted = [name for name, spec, conv in fields if name is not None and (spec or conv)]
        if formatted:
            raise ValueError(
                f"placeholder {{{formatted[0]}}} has a format or conversion; write it bare"
            )
        unknown = sorted(used - PLACEHOLDERS.keys())
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
        return text

    # Field validators, not one model validator: the error then names the field at fault,
    # and runs alongside the other fields' errors. Fields are validated in order, so
    # `info.data` holds the ones above (when they were valid).
    @field_validator("sources")
    @classmethod
    def _purpose_allows(cls, sources: list[Domain], info: ValidationInfo) -> list[Domain]:
        if "purpose" in info.data:
            try:
                check_rule(info.data.get("id", "?"), info.data["purpose"], sources)
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        return sources

    @field_validator("select")
    @classmethod
    def _within_sources(cls, select: SelectSpec, info: ValidationInfo) -> SelectSpec:
        sources = info.data.get("sources")
        if sources is None:
            return select
        outside = [t.value for t in select.event_types if FAMILIES[t].domain not in sources]
        if outside:
            raise ValueError(f"event_types {', '.join(outside)} lie outside the sources")
        debt_only = select.creditor_types or select.min_amount_eur or select.crisis is not None
        if debt_only and Domain.DEBT not in sources:
            raise ValueError(
                "creditor_types, min_amount_eur and crisis select debt signals: "
                "debt must be a source"
            )
        return select

    @field_validator("deadline_when")
    @classmethod
    def _domains_are_sources(
        cls, specials: list[DeadlineWhenSpec], info: ValidationInfo
    ) -> list[DeadlineWhenSpec]:
        sources = info.data.get("sources") or []
        for special in specials:
            if special.domain not in sources:
                raise ValueError(f"domain {special.domain.value} is not one of the sources")
        return specials

    def compile(self) -> Rule:
        condition = self.condition
        return Rule(
            id=self.id,
            version=self.version,
            title=self.title,
            purpose=self.purpose,
            legal_basis=self.legal_basis,
            priority=self.priority,
            sources=frozenset(d.value for d in self.sources),
            condition=Condition(
                window_days=condition.window_days,
                # Two creditors or two domains take at least two events.
                min_events=max(
                    condition.min_events, condition.min_creditors, condition.min_domains
                ),
                min_creditors=condition.min_creditors,
                min_domains=condition.min_domains,
            ),
            deadline=self.deadline.compile(),
            deadline_when=tuple(
                DeadlineWhen(s.domain.value, s.deadline.compile()) for s in self.deadline_when
            ),
            filter=Filter(
                event_types=frozenset(t.value for t in self.select.event_types),
                creditor_types=frozenset(self.select.creditor_types),
                min_amount_eur=self.select.min_amount_eur,
                crisis=self.select.crisis,
            ),
            cooldown_days=self.cooldown_days,
            undisclosed_domains=self.undisclosed_domains,
            explanation=" ".join(self.explanation.split()),
        )


class RuleSetSpec(_Strict):
    """A rules file."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,40}$")
    version: str = Field(min_length=1, description="The file's version, e.g. 2026.1.")
    description: str = ""
    rules: list[RuleSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSetSpec:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} appears twice")
            seen.add(rule.id)
        return self


@dataclass(frozen=True)
class RuleSet:
    name: str
    version: str
    path: Path
    #: SHA-256 of the file, so operators can tell two copies of "the same version" apart.
    digest: str
    rules: tuple[Rule, ...]
    spec: RuleSetSpec

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    def versions(self) -> dict[str, int]:
        return {r.id: r.version for r in self.rules}


class RulesFileError(ConfigurationError):
    """A rules file that cannot be used; `problems` has one line per fault."""

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{path}: refused, {len(problems)} problem(s):\n" + "\n".join(problems))


def load_ruleset(path: Path) -> RuleSet:
    """Reads and validates a rules file; raises `RulesFileError` naming line and field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesFileError(path, [f"{path}: cannot be read: {exc.strerror}"]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise RulesFileError(path, [f"{where}: not valid YAML: {exc}"]) from None
    duplicates = _duplicate_keys(root)
    if duplicates:
        raise RulesFileError(path, [f"{path}:{line}: {what}" for line, what in duplicates])
    try:
        spec = RuleSetSpec.model_validate(data)
    except ValidationError as exc:
        raise RulesFileError(path, _describe(path, root, exc)) from None
    return RuleSet(
        name=spec.name,
        version=spec.version,
        path=path,
        digest=hashlib.sha256(text.encode()).hexdigest(),
        rules=tuple(r.compile() for r in spec.rules),
        spec=spec,
    )


def _describe(path: Path, root: yaml.Node | None, error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        # Union members add their class name to the path; the person wants the YAML path.
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p[:1].isupper())]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{path}:{_line(root, loc)}: {field or '(file)'}: {message}")
    return problems


def _line(node: yaml.Node | None, loc: Sequence[int | str]) -> int:
    """The line of the deepest YAML node on the error's path (1-based)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for step in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            child = node.value[step] if step < len(node.value) else None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _duplicate_keys(node: yaml.Node | None) -> list[tuple[int, str]]:
    """PyYAML keeps the last of two equal keys without a word; a rules file must not."""
    found: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                found.append((key.start_mark.line + 1, f"key {key.value!r} appears twice"))
            seen.add(key.value)
            found.extend(_duplicate_keys(value))
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found.extend(_duplicate_keys(item))
    return found


@dataclass(frozen=True)
class ExampleResult:
    rule_id: str
    name: str
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


def run_examples(ruleset: RuleSet) -> list[ExampleResult]:
    """Runs every rule's examples through the engine with that rule alone."""
    results = []
    for spec, rule in zip(ruleset.spec.rules, ruleset.rules, strict=True):
        for example in spec.examples:
            results.append(ExampleResult(rule.id, example.name, _run_example(rule, example)))
    return results


_EXAMPLE_HOUSEHOLD = "hh1-example"


def _run_example(rule: Rule, example: ExampleSpec) -> list[str]:
    engine = Engine([rule])
    household = Household()
    final: dict[str, dict[str, Any]] = {}
    positions: dict[str, int] = {}
    for step in example.steps:
        if isinstance(step, CloseStep):
            current = household.open.get(rule.id)
            if current is None:
                return [f"step close {step.close}: there is no open alert to close"]
            engine.close(household, rule.id, current.alert_id, step.close, step.outcome)
            continue
        fact = _example_fact(step, len(positions) + 1)
        positions[fact.event_id] = len(positions) + 1
        outcome = engine.apply(_EXAMPLE_HOUSEHOLD, household, fact)
        if outcome.rejected:
            return [f"event {positions[fact.event_id]}: refused: {outcome.rejected}"]
        for record in engine.records(_EXAMPLE_HOUSEHOLD, household, outcome.publish):
            final[record["alert_id"]] = record
    return _compare(sorted(final.values(), key=lambda a: a["episode"]), example.expect, positions)


def _example_fact(step: EventStep, n: int) -> Fact:
    family = FAMILIES[step.type]
    partner = step.creditor or step.type.value
    return Fact(
        event_id=event_id(partner, f"example-{n}"),
        event_type=step.type.value,
        domain=family.domain.value,
        partner_id=partner,
        partner_type=step.creditor_type or step.type.value,
        event_date=step.date,
        municipality_code=step.municipality,
        wijk_code=None,
        creditor_type=step.creditor_type if step.type is EventType.DEBT_SIGNAL else None,
        creditor=(step.creditor or "schuldeiser").casefold().strip()
        if step.type is EventType.DEBT_SIGNAL
        else None,
        amount_eur=step.amount_eur if step.type is EventType.DEBT_SIGNAL else None,
        crisis=step.crisis,
        received_on=step.received or step.date,
    )


def _compare(
    got: list[dict[str, Any]], expected: list[ExpectedAlert], positions: dict[str, int]
) -> list[str]:
    if len(got) != len(expected):
        return [f"expected {len(expected)} alert(s), the rule gave {len(got)}"]
    problems = []
    for alert, want in zip(got, expected, strict=True):
        events = [positions[c["event_id"]] for c in alert["contributions"]]
        actual = {
            "episode": alert["episode"],
            "raised_on": alert["raised_on"],
            "deadline": alert["deadline"],
            "events": events,
        }
        for key, value in want.model_dump(exclude_none=True).items():
            if actual[key] != value:
                problems.append(
                    f"episode {want.episode}: expected {key} {value}, the rule gave {actual[key]}"
                )
    return problems


def json_schema() -> dict[str, Any]:
    """The JSON schema of a rules file (published as docs/rules.schema.json)."""
    schema = RuleSetSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Twente hub rules file"
    return schema
