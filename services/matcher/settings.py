"""Settings of the matcher service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.matcher.ruleset import DEFAULT_RULES_FILE
from services.shared.config import HubSettings


class MatcherSettings(HubSettings):
    matcher_host: str = "127.0.0.1"
    matcher_port: int = Field(8002, ge=1, le=65535)
    #: Where Faust keeps table state locally; the changelog topic is the real copy.
    matcher_data_dir: str = ".hub/matcher"
    matcher_commit_interval_s: float = Field(1.0, gt=0)
    #: How long a rebalance may take, and how soon a silent worker is presumed dead.
    matcher_rebalance_timeout_s: float = Field(10.0, gt=0)
    matcher_session_timeout_s: float = Field(10.0, gt=0)
    #: The rules file the matcher runs (YAML, docs/rules.md); read once at start.
    matcher_rules_file: Path = DEFAULT_RULES_FILE
