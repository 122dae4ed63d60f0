"""`hub teams` as a municipal data team uses it, against a database of its own."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from services.cli.stack import create_database
from services.shared.config import DatabaseSettings
from services.shared.db.migrate import upgrade
from services.shared.region import MUNICIPALITIES
from tests.integration.fixtures import query

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "teams.example.yaml"
HMAC = "hmac-secret-of-the-case-system-0123456789"
CLIENT_SECRET = "client-secret-from-the-authorisation-server"


@pytest.fixture(scope="module")
def directory_db(database_url: str) -> str:
    url = asyncio.run(create_database(database_url, f"teams{uuid.uuid4().hex[:8]}"))
    upgrade(DatabaseSettings(database_url=url))
    return url


def hub_cli(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env={**os.environ, "HUB_DATABASE_URL": url, "HUB_LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def listed(url: str) -> dict[str, dict[str, Any]]:
    done = hub_cli(url, "teams", "list", "--json")
    assert done.returncode == 0, done.stderr
    return {t["team_id"]: t for t in json.loads(done.stdout)}


def test_seed_apply_members_and_disable(directory_db: str) -> None:
    first = hub_cli(directory_db, "teams", "seed")
    assert first.returncode == 0 and "29 teams added" in first.stdout
    # Running it again changes nothing, not even a team disabled meanwhile.
    assert hub_cli(directory_db, "teams", "disable", "almelo-wijkteam").returncode == 0
    again = hub_cli(directory_db, "teams", "seed")
    assert "0 teams added" in again.stdout
    teams = listed(directory_db)
    assert teams["almelo-wijkteam"]["active"] is False
    covered = {m for t in teams.values() for m in t["municipalities"]}
    assert covered == set(MUNICIPALITIES)

    secrets = {
        "ENSCHEDE_ZAAKSYSTEEM_HMAC": HMAC,
        "ENSCHEDE_ZAAKSYSTEEM_CLIENT_SECRET": CLIENT_SECRET,
    }
    missing = hub_cli(directory_db, "teams", "apply", str(EXAMPLE))
    assert missing.returncode == 2 and "ENSCHEDE_ZAAKSYSTEEM_HMAC is not set" in missing.stderr
    applied = hub_cli(directory_db, "teams", "apply", str(EXAMPLE), **secrets)
    assert applied.returncode == 0, applied.stderr
    teams = listed(directory_db)
    assert teams["enschede-wijkteam-noord"]["wijken"] == ["WK015301", "WK015302"]
    assert len(teams["enschede-schuldhulp"]["channels"]) == 2
    output = json.dumps(teams)
    assert HMAC not in output and CLIENT_SECRET not in output
    stored = asyncio.run(query(directory_db, "select sealed_secrets from team_channels", {}))
    assert all(HMAC.encode() not in bytes(r[0] or b"") for r in stored)

    token = hub_cli(directory_db, "teams", "add-member", "enschede-schuldhulp", "medewerker-17")
    assert token.returncode == 0 and len(token.stdout.strip()) >= 40
    digests = asyncio.run(
        query(
            directory_db,
            "select token_sha256 from team_members where member_id = 'medewerker-17'",
            {},
        )
    )
    # Only the digest is kept, and it is the token's.
    assert bytes(digests[0][0]) == hashlib.sha256(token.stdout.strip().encode()).digest()
    assert hub_cli(directory_db, "teams", "revoke-member", "medewerker-17").returncode == 0
    unknown = hub_cli(directory_db, "teams", "add-member", "geen-team", "x")
    assert unknown.returncode == 2 and "no team 'geen-team'" in unknown.stderr


def test_a_team_file_that_cannot_work_is_refused_with_each_fault_and_nothing_applied(
    directory_db: str, tmp_path: Path
) -> None:
    bad = tmp_path / "teams.yaml"
    bad.write_text(
        "teams:\n"
        "  - team_id: hengelo-noord\n"
        "    name: Wijkteam Hengelo Noord\n"
        "    purposes: [care]\n"
        "    wijken: [WK024801]\n"
        "  - team_id: hengelo-zuid\n"
        "    name: Wijkteam Hengelo Zuid\n"
        "    purposes: [profiling]\n"
        "    municipalities: [GM0164]\n"
    )
    done = hub_cli(directory_db, "teams", "apply", str(bad))
    assert done.returncode == 2
    assert "teams.0.wijken.0" in done.stderr and "Twente" in done.stderr
    assert "teams.1.purposes" in done.stderr and "unknown purpose" in done.stderr
    assert "hengelo-noord" not in listed(directory_db)
