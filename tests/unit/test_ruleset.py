"""The rules file: what it accepts, how it refuses, its examples and its published schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.matcher.ruleset import (
    DEFAULT_RULES_FILE,
    RulesFileError,
    json_schema,
    load_ruleset,
    run_examples,
)
from services.shared.config import REPO_ROOT

BASELINE_TEXT = DEFAULT_RULES_FILE.read_text(encoding="utf-8")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _line_of(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if fragment in line)


def test_the_baseline_file_holds_the_three_rules_and_all_its_examples_pass() -> None:
    ruleset = load_ruleset(DEFAULT_RULES_FILE)
    assert ruleset.versions() == {"twente-match": 1, "debt-crisis": 1, "multi-domain": 1}
    results = run_examples(ruleset)
    assert len(results) >= 12
    assert [r for r in results if not r.passed] == []


def test_an_invalid_file_is_refused_with_line_and_field_for_every_fault(tmp_path: Path) -> None:
    text = BASELINE_TEXT.replace("window_days: 90", "window_days: negentig").replace(
        "    priority: URGENT", "    priority: ASAP"
    )
    with pytest.raises(RulesFileError) as refused:
        load_ruleset(_write(tmp_path, text))
    problems = refused.value.problems
    assert len(problems) == 2
    assert problems[0].startswith(
        f"{tmp_path / 'rules.yaml'}:{_line_of(text, 'negentig')}: rules[0].condition.window_days: "
    )
    assert f":{_line_of(text, 'ASAP')}: rules[1].priority: " in problems[1]


def test_a_rule_its_purpose_may_not_combine_is_refused_at_its_sources(tmp_path: Path) -> None:
    text = BASELINE_TEXT.replace("sources: [debt]", "sources: [debt, care]", 1)
    with pytest.raises(RulesFileError) as refused:
        load_ruleset(_write(tmp_path, text))
    (problem,) = refused.value.problems
    assert f":{_line_of(text, 'sources: [debt, care]')}: rules[0].sources: " in problem
    assert "care is health data" in problem and "Wgs art. 8b" in problem


@pytest.mark.parametrize(
    ("change", "fragment", "field", "message"),
    [
        ("{window_days} dagen, gemeld", "{window} dagen", "rules[0].explanation", "{window}"),
        ("{window_days} dagen, gemeld", "{window_days:>5} dagen", "rules[0].explanation", "bare"),
        ("      crisis: true\n", "      colour: red\n", "rules[1].select.colour", "Extra inputs"),
        ("window_days: 180", "window_days: 400", "rules[2].condition.window_days", "less than"),
        ("id: debt-crisis", "id: twente-match", "", "appears twice"),
    ],
)
def test_other_faults_name_their_field(
    tmp_path: Path, change: str, fragment: str, field: str, message: str
) -> None:
    replacement = change + fragment if "colour" in fragment else fragment
    text = BASELINE_TEXT.replace(change, replacement, 1)
    with pytest.raises(RulesFileError) as refused:
        load_ruleset(_write(tmp_path, text))
    (problem,) = refused.value.problems
    assert f": {field}: " in problem or not field
    assert message in problem


def test_a_repeated_key_is_refused_not_silently_overwritten(tmp_path: Path) -> None:
    text = BASELINE_TEXT.replace("    version: 1\n", "    version: 1\n    version: 2\n", 1)
    with pytest.raises(RulesFileError) as refused:
        load_ruleset(_write(tmp_path, text))
    assert refused.value.problems == [
        f"{tmp_path / 'rules.yaml'}:{_line_of(text, 'version: 2')}: key 'version' appears twice"
    ]


def test_yaml_that_does_not_parse_names_its_line(tmp_path: Path) -> None:
    with pytest.raises(RulesFileError, match=r"rules.yaml:4: not valid YAML"):
        load_ruleset(_write(tmp_path, "name: x\nrules:\n  - [a\n  b: c\n"))


def test_an_example_with_a_wrong_expectation_fails_and_says_what_differs(tmp_path: Path) -> None:
    text = BASELINE_TEXT.replace(
        "{episode: 1, raised_on: 2025-05-12, deadline: 2025-06-09, events: [1, 2]}",
        "{episode: 1, raised_on: 2025-05-12, deadline: 2025-06-10, events: [1, 2]}",
        1,
    )
    text = text.replace(
        "          - {type: debt-signal, date: 2025-04-03, creditor: Domijn, creditor_type: HUUR}\n"
        "        expect: []",
        "          - {type: debt-signal, date: 2025-04-03, creditor: Domijn, creditor_type: HUUR}\n"
        "        expect: [{episode: 1}]",
        1,
    )
    failed = {r.name: r.problems for r in run_examples(load_ruleset(_write(tmp_path, text)))}
    assert failed["twee schuldeisers binnen 90 dagen"] == [
        "episode 1: expected deadline 2025-06-10, the rule gave 2025-06-09"
    ]
    assert failed["dezelfde schuldeiser twee keer is geen Twente-match"] == [
        "expected 1 alert(s), the rule gave 0"
    ]


def test_the_published_json_schema_is_the_one_the_code_validates_with() -> None:
    published = json.loads((REPO_ROOT / "docs" / "rules.schema.json").read_text(encoding="utf-8"))
    assert published == json_schema(), "run `hub rules schema --output docs/rules.schema.json`"
    assert set(published["properties"]) == {"name", "version", "description", "rules"}
