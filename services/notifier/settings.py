"""Settings of the notifier service, with the teams that may use the team API."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, field_validator

from services.shared.config import DatabaseSettings, HubSettings, VaultSettings
from services.shared.purposes import check_purposes
from services.shared.region import MUNICIPALITIES


class TeamMember(BaseModel):
    member_id: str = Field(min_length=1, max_length=64)
    #: Bearer token of the member; an OIDC provider can take this place later.
    api_key: SecretStr


class Team(BaseModel):
    """A wijkteam (or regional team): where it works and which purposes it serves."""

    team_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    municipalities: list[str]
    purposes: list[str]
    members: list[TeamMember] = Field(default_factory=list)

    @field_validator("municipalities")
    @classmethod
    def _twente(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - MUNICIPALITIES.keys())
        if unknown:
            raise ValueError(f"not Twente municipalities: {', '.join(unknown)}")
        return value

    @field_validator("purposes")
    @classmethod
    def _known_purposes(cls, value: list[str]) -> list[str]:
        check_purposes("team", value)
        return value


class NotifierSettings(HubSettings, DatabaseSettings, VaultSettings):
    notifier_host: str = "127.0.0.1"
    notifier_port: int = Field(8003, ge=1, le=65535)
    notifier_group_id: str = "hub-notifier"
    #: How often the notifier looks for open alerts past their deadline.
    notifier_overdue_check_s: float = Field(60.0, gt=0)
    #: JSON list of teams with their members' tokens (HUB_NOTIFIER_TEAMS). **Secrets.**
    notifier_teams: list[Team] = Field(default_factory=list)
