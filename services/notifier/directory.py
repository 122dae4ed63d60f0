"""The team directory in PostgreSQL: teams, where they work, their purposes, members and
channels; who holds a token; and which teams an alert is routed to.

Routing (docs/notifier.md#routing): of the active teams holding the alert's purpose, the
teams covering the alert's wijk get it; when none does, the teams covering its whole
municipality; when none does, the fallback team(s), counted, so an operator sees the gap.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    field_validator,
    model_validator,
)
from sqlalchemy import literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.shared.crypto import Vault
from services.shared.db.models import Delivery, Team, TeamChannel, TeamMember
from services.shared.errors import ConfigurationError
from services.shared.purposes import PURPOSES, check_purposes
from services.shared.region import MUNICIPALITIES, WIJK_CODE
from services.shared.tokens import issue_token, token_digest

NoticeName = Literal["raised", "updated", "overdue"]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SLUG = r"^[a-z0-9][a-z0-9-]{0,63}$"


def _one_line(value: str) -> str:
    """Names and targets go into HTTP requests and e-mail headers: one line, trimmed."""
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must be one line without control characters")
    return value


OneLine = Annotated[str, AfterValidator(_one_line)]


def _twente_municipality(code: str) -> str:
    if code not in MUNICIPALITIES:
        raise ValueError(f"{code!r} is not the CBS code of a Twente municipality")
    return code


def _twente_wijk(code: str) -> str:
    if not WIJK_CODE.match(code):
        raise ValueError(f"{code!r} is not a CBS wijk code (WK + 6 digits)")
    if f"GM{code[2:6]}" not in MUNICIPALITIES:
        raise ValueError(f"wijk {code} does not lie in a Twente municipality")
    return code


class OAuthSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    token_url: HttpUrl
    client_id: str = Field(min_length=1, max_length=200)
    client_secret: SecretStr
    scope: str | None = Field(None, max_length=200)


class ChannelSpec(BaseModel):
    """A webhook or an e-mail address of a team, and which notices it gets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["webhook", "email"]
    #: The webhook's URL, or the team's functional mailbox.
    target: OneLine = Field(min_length=3, max_length=2000)
    #: Default: a webhook hears of new and updated alerts, a mailbox of new ones.
    notices: list[NoticeName] | None = None
    #: The webhook's HMAC-SHA256 key (at least 32 characters). **Secret.**
    secret: SecretStr | None = None
    oauth: OAuthSpec | None = None

    @model_validator(mode="after")
    def _fits_kind(self) -> ChannelSpec:
        if self.kind == "webhook":
            HttpUrl(self.target)
            if self.secret is None or len(self.secret.get_secret_value()) < 32:
                raise ValueError("a webhook needs a secret of at least 32 characters")
        else:
            if not _EMAIL.match(self.target):
                raise ValueError(f"{self.target!r} is not an e-mail address")
            if self.secret is not None or self.oauth is not None:
                raise ValueError("an e-mail channel takes no secret and no oauth")
        return self

    def wanted(self) -> list[str]:
        if self.notices is not None:
            return sorted(set(self.notices))
        return ["raised", "updated"] if self.kind == "webhook" else ["raised"]


class TeamSpec(BaseModel):
    """A team as `hub teams apply` reads it from a file, and as the seed makes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    team_id: str = Field(pattern=_SLUG)
    name: OneLine = Field(min_length=1, max_length=200)
    purposes: list[str] = Field(min_length=1)
    municipalities: list[Annotated[str, AfterValidator(_twente_municipality)]] = Field(
        default_factory=list
    )
    wijken: list[Annotated[str, AfterValidator(_twente_wijk)]] = Field(default_factory=list)
    #: Gets the alerts that no other team covers.
    fallback: bool = False
    channels: list[ChannelSpec] = Field(default_factory=list)

    @field_validator("purposes")
    @classmethod
    def _known_purposes(cls, value: list[str]) -> list[str]:
        try:
            check_purposes("the team", value)
        except ConfigurationError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _covers_something(self) -> TeamSpec:
        if not (self.municipalities or self.wijken or self.fallback):
            raise ValueError("a team covers municipalities or wijken, or is the fallback team")
        return self


class TeamsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    teams: list[TeamSpec]


@dataclass(frozen=True)
class TeamView:
    """A team as the API and the inbox need it: who, and which purposes it serves."""

    team_id: str
    name: str
    purposes: tuple[str, ...]


@dataclass(frozen=True)
class Member:
    """An authenticated team member. API tokens today; an OIDC provider would produce the
    same thing from a verified ID token's subject (docs/notifier.md#authentication)."""

    member_id: str
    team: TeamView
    #: Ties an inbox session to the credential it began with: a new token for the member
    #: (`hub teams add-member` again) ends the sessions of the old one.
    credential: str = ""


def _credential(digest: bytes) -> str:
    """A short fingerprint of the token digest: enough to notice a new token, useless to log in."""
    return hashlib.sha256(b"session:" + digest).hexdigest()[:16]


async def _active_member(session: AsyncSession, which: Any) -> Member | None:
    """The active member of an active team that `which` selects, or None."""
    row = (
        await session.execute(
            select(
                TeamMember.member_id,
                TeamMember.token_sha256,
                Team.team_id,
                Team.name,
                Team.purposes,
            )
            .join(Team, Team.team_id == TeamMember.team_id)
            .where(which, TeamMember.active, Team.active)
        )
    ).one_or_none()
    if row is None:
        return None
    team = TeamView(row.team_id, row.name, tuple(row.purposes))
    return Member(row.member_id, team, _credential(row.token_sha256))


async def authenticate(session: AsyncSession, token: str) -> Member | None:
    return await _active_member(session, TeamMember.token_sha256 == token_digest(token))


async def member_by_id(session: AsyncSession, member_id: str, credential: str) -> Member | None:
    """The member behind an inbox session, if still active with the credential the session
    began with: a revoked member, a disabled team or a new token ends the session."""
    member = await _active_member(session, TeamMember.member_id == member_id)
    if member is None or not hmac.compare_digest(member.credential, credential):
        return None
    return member


async def apply_team(
    session: AsyncSession, vault: Vault, spec: TeamSpec, *, only_new: bool = False
) -> bool:
    """Creates or updates the team; its channels become exactly those of `spec`. Returns
    whether the team was new. With `only_new` an existing team is left as it is.

    A channel is known by kind and target: kept (with its delivery history) when still
    listed, made inactive when not (its undelivered notices are settled as failed, for a
    replay to another channel), added when new. A disabled team stays disabled
    (`hub teams enable`).
    """
    values = {
        "name": spec.name,
        "purposes": spec.purposes,
        "municipalities": spec.municipalities,
        "wijken": spec.wijken,
        "fallback": spec.fallback,
    }
    statement = insert(Team).values(team_id=spec.team_id, active=True, **values)
    upsert = (
        statement.on_conflict_do_nothing()
        if only_new
        else statement.on_conflict_do_update(index_elements=[Team.team_id], set_=values)
    )
    new = (await session.execute(upsert.returning(literal_column("xmax = 0")))).scalar_one_or_none()
    if only_new and not new:
        return False
    existing = {
        (c.kind, c.target): c
        for c in await session.scalars(
            select(TeamChannel).where(TeamChannel.team_id == spec.team_id)
        )
    }
    listed = set()
    for wanted in spec.channels:
        listed.add((wanted.kind, wanted.target))
        channel = existing.get((wanted.kind, wanted.target))
        if channel is None:
            channel = TeamChannel(team_id=spec.team_id, kind=wanted.kind, target=wanted.target)
            session.add(channel)
        channel.notices = wanted.wanted()
        channel.active = True
        channel.oauth_token_url = str(wanted.oauth.token_url) if wanted.oauth else None
        channel.oauth_client_id = wanted.oauth.client_id if wanted.oauth else None
        channel.oauth_scope = wanted.oauth.scope if wanted.oauth else None
        await session.flush()  # the channel id binds its sealed secrets
        channel.sealed_secrets = _seal_channel_secrets(vault, channel.channel_id, wanted)
    removed = [c.channel_id for key, c in existing.items() if key not in listed and c.active]
    for key, channel in existing.items():
        if key not in listed:
            channel.active = False
    await settle_pending(session, Delivery.channel_id.in_(removed), "channel-removed")
    return bool(new)


async def settle_pending(session: AsyncSession, which: Any, reason: str) -> int:
    """Marks undelivered notices failed that no channel will send any more (the channel was
    removed, the team disabled); `hub deliveries replay --failed-only` can send them again."""
    result = await session.execute(
        update(Delivery)
        .where(which, Delivery.status == "pending")
        .values(status="failed", last_error=reason)
        .returning(Delivery.delivery_id)
    )
    return len(result.all())


def _seal_channel_secrets(vault: Vault, channel_id: int, spec: ChannelSpec) -> bytes | None:
    found = {}
    if spec.secret is not None:
        found["hmac"] = spec.secret.get_secret_value()
    if spec.oauth is not None:
        found["client_secret"] = spec.oauth.client_secret.get_secret_value()
    return vault.seal_secrets(f"channel:{channel_id}", found) if found else None


def channel_secrets(vault: Vault, channel: TeamChannel) -> dict[str, str]:
    if channel.sealed_secrets is None:
        return {}
    return vault.open_secrets(f"channel:{channel.channel_id}", channel.sealed_secrets)


async def set_team_active(session: AsyncSession, team_id: str, active: bool) -> bool:
    """Enables or disables a team. A disabled team gets no new alerts; its open alerts go to
    the next team in line at the notifier's next sweep, and its queued notices are settled."""
    result = await session.execute(
        update(Team).where(Team.team_id == team_id).values(active=active).returning(Team.team_id)
    )
    found = result.scalar_one_or_none() is not None
    if found and not active:
        await settle_pending(session, Delivery.team_id == team_id, "team-disabled")
    return found


async def add_member(
    session: AsyncSession, team_id: str, member_id: str, token: str | None = None
) -> str:
    """Adds a member and returns their token: shown once, only its digest is kept.

    With `token` given (tests, the demo) that token is used; it must be long enough.
    Adding a member who exists gives them a new token (the old one stops working).
    """
    if await session.get(Team, team_id) is None:
        raise ConfigurationError(f"no team {team_id!r}")
    token = issue_token(token, "a member token")
    values = {"team_id": team_id, "token_sha256": token_digest(token), "active": True}
    await session.execute(
        insert(TeamMember)
        .values(member_id=member_id, **values)
        .on_conflict_do_update(index_elements=[TeamMember.member_id], set_=values)
    )
    return token


async def revoke_member(session: AsyncSession, member_id: str) -> bool:
    result = await session.execute(
        update(TeamMember)
        .where(TeamMember.member_id == member_id)
        .values(active=False)
        .returning(TeamMember.member_id)
    )
    return result.scalar_one_or_none() is not None


@dataclass(frozen=True)
class Route:
    team_id: str
    #: wijk, municipality or fallback.
    via: str


def route(
    teams: Sequence[Team], purpose: str, municipality_code: str, wijk_code: str | None
) -> list[Route]:
    """The teams an alert goes to, most specific first; empty when not even a fallback fits."""
    serving = [t for t in teams if t.active and purpose in t.purposes]
    by_wijk = [t for t in serving if wijk_code is not None and wijk_code in t.wijken]
    if by_wijk:
        return [Route(t.team_id, "wijk") for t in by_wijk]
    by_municipality = [t for t in serving if municipality_code in t.municipalities]
    if by_municipality:
        return [Route(t.team_id, "municipality") for t in by_municipality]
    return [Route(t.team_id, "fallback") for t in serving if t.fallback]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


FALLBACK_TEAM_ID = "regio-twente-vangnet"


def seed() -> list[TeamSpec]:
    """The starting directory: in each of the 14 municipalities a debt-help team (early debt
    signalling, Wgs) and a wijkteam (care and the integrated approach), each covering the
    whole municipality, and the regional fallback team. Wijk teams are added per municipality
    as it organises itself (`hub teams apply`)."""
    teams = []
    for code, name in MUNICIPALITIES.items():
        slug = _slug(name)
        teams.append(
            TeamSpec(
                team_id=f"{slug}-schuldhulp",
                name=f"Schuldhulp en vroegsignalering {name}",
                purposes=["debt-help"],
                municipalities=[code],
            )
        )
        teams.append(
            TeamSpec(
                team_id=f"{slug}-wijkteam",
                name=f"Wijkteam {name}",
                purposes=["care", "integrated-approach"],
                municipalities=[code],
            )
        )
    teams.append(
        TeamSpec(
            team_id=FALLBACK_TEAM_ID,
            name="Regionaal vangnet Twente",
            purposes=list(PURPOSES),
            fallback=True,
        )
    )
    return teams
