"""The team directory's rules: which team an alert goes to, and which team files are refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.notifier.delivery import idempotency_key
from services.notifier.directory import TeamSpec, route, seed
from services.shared.db.models import Team
from services.shared.purposes import PURPOSES
from services.shared.region import MUNICIPALITIES


def team(team_id: str, purposes: list[str], **covers: Any) -> Team:
    return Team(
        team_id=team_id,
        name=team_id,
        purposes=purposes,
        municipalities=covers.get("municipalities", []),
        wijken=covers.get("wijken", []),
        fallback=covers.get("fallback", False),
        active=covers.get("active", True),
    )


ENSCHEDE = [
    team("schuldhulp", ["debt-help"], municipalities=["GM0153"]),
    team("wijkteam-centrum", ["care", "integrated-approach"], wijken=["WK015300"]),
    team("wijkteam-stad", ["care", "integrated-approach"], municipalities=["GM0153"]),
    team("vangnet", list(PURPOSES), fallback=True),
]


def routed(purpose: str, municipality: str, wijk: str | None, teams: list[Team] = ENSCHEDE) -> Any:
    return [(r.team_id, r.via) for r in route(teams, purpose, municipality, wijk)]


def test_the_wijk_team_takes_its_wijk_before_the_municipality_team() -> None:
    assert routed("integrated-approach", "GM0153", "WK015300") == [("wijkteam-centrum", "wijk")]
    assert routed("integrated-approach", "GM0153", "WK015301") == [
        ("wijkteam-stad", "municipality")
    ]


def test_only_teams_holding_the_purpose_get_the_alert() -> None:
    # The wijk team covers the wijk but not debt help: the municipal debt team takes it.
    assert routed("debt-help", "GM0153", "WK015300") == [("schuldhulp", "municipality")]


def test_what_no_team_covers_goes_to_the_fallback_team() -> None:
    assert routed("debt-help", "GM0164", "WK016401") == [("vangnet", "fallback")]
    without_fallback = [t for t in ENSCHEDE if not t.fallback]
    assert routed("debt-help", "GM0164", None, without_fallback) == []


def test_an_inactive_team_gets_nothing() -> None:
    teams = [team("schuldhulp", ["debt-help"], municipalities=["GM0153"], active=False)]
    teams.append(team("vangnet", ["debt-help"], fallback=True))
    assert routed("debt-help", "GM0153", None, teams) == [("vangnet", "fallback")]


def test_the_seed_covers_every_municipality_for_every_purpose() -> None:
    specs = seed()
    teams = [team(s.team_id, s.purposes, municipalities=s.municipalities) for s in specs]
    for code in MUNICIPALITIES:
        for purpose in PURPOSES:
            assert [via for _, via in routed(purpose, code, None, teams)] == ["municipality"]
    assert sum(s.fallback for s in specs) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"municipalities": ["GM0248"]}, "not the CBS code of a Twente municipality"),
        ({"wijken": ["WK024801"]}, "does not lie in a Twente municipality"),
        ({"wijken": ["W123"]}, "not a CBS wijk code"),
        ({"purposes": ["profiling"]}, "unknown purpose"),
        ({"municipalities": []}, "covers municipalities or wijken"),
        ({"team_id": "Team Enschede"}, "should match pattern"),
        (
            {"channels": [{"kind": "webhook", "target": "https://x.test/h", "secret": "short"}]},
            "secret of at least 32 characters",
        ),
        ({"channels": [{"kind": "email", "target": "not-an-address"}]}, "not an e-mail address"),
        (
            {"channels": [{"kind": "webhook", "target": "ftp://x", "secret": "s" * 32}]},
            "URL",
        ),
    ],
)
def test_a_team_file_entry_that_cannot_work_is_refused_with_the_reason(
    change: dict[str, Any], message: str
) -> None:
    good = {
        "team_id": "wijkteam-enschede",
        "name": "Wijkteam Enschede",
        "purposes": ["care"],
        "municipalities": ["GM0153"],
    }
    TeamSpec.model_validate(good)
    with pytest.raises(ValidationError, match=message):
        TeamSpec.model_validate({**good, **change})


def test_the_idempotency_key_names_alert_version_notice_and_channel() -> None:
    key = idempotency_key("a1b2", 3, "updated", 7)
    assert key == "a1b2.v3.updated.c7"
    assert (
        len(
            {
                idempotency_key("a", v, n, c)
                for v in (1, 2)
                for n in ("raised", "overdue")
                for c in (1, 2)
            }
        )
        == 8
    )


def test_a_name_or_target_over_several_lines_is_refused() -> None:
    """A YAML folded scalar (`name: >`) ends in a newline: it would break e-mail headers."""
    good = {"team_id": "t", "purposes": ["care"], "municipalities": ["GM0153"]}
    with pytest.raises(ValidationError, match="one line"):
        TeamSpec.model_validate({**good, "name": "Wijkteam\nEnschede"})
    assert TeamSpec.model_validate({**good, "name": " Wijkteam Enschede\n"}).name == (
        "Wijkteam Enschede"
    )
    hook = {"kind": "webhook", "target": "https://x.test/h\n", "secret": "s" * 32}
    assert (
        TeamSpec.model_validate({**good, "name": "t", "channels": [hook]}).channels[0].target
        == "https://x.test/h"
    )
