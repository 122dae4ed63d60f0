"""The three services as processes on this machine, wired to one Kafka and one PostgreSQL.

`hub demo` and the end-to-end tests run the hub through this, the way an operator would:
migrate the database, create the topics, start ingest, matcher and notifier, wait until
each answers `/readyz`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from services.cli.infra import end_process, free_port
from services.ingest.registry import PartnerSpec, ensure_partner
from services.notifier.directory import TeamSpec, add_member, apply_team
from services.shared.config import DatabaseSettings, HubSettings, VaultSettings
from services.shared.db.migrate import upgrade
from services.shared.purposes import PURPOSES
from services.shared.region import MUNICIPALITIES
from services.shared.topics import create_topics

SERVICES = ("ingest", "matcher", "notifier")
READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class PartnerAccount:
    """A partner of the registry with the API key handed out for this run."""

    partner_id: str
    partner_type: str
    api_key: str
    event_types: tuple[str, ...]
    may_send_bsn: bool = False

    def spec(self) -> PartnerSpec:
        return PartnerSpec.model_validate(
            {
                "partner_id": self.partner_id,
                "name": self.partner_id,
                "partner_type": self.partner_type,
                "event_types": list(self.event_types),
                "may_send_bsn": self.may_send_bsn,
            }
        )


@dataclass(frozen=True)
class TeamAccount:
    """A team of the directory with one member and that member's token."""

    team_id: str
    municipalities: tuple[str, ...]
    purposes: tuple[str, ...]
    member_id: str
    token: str
    wijken: tuple[str, ...] = ()
    fallback: bool = False
    #: Channels as `ChannelSpec` fields (kind, target, secret, notices, oauth).
    channels: tuple[dict[str, Any], ...] = ()

    def spec(self) -> TeamSpec:
        return TeamSpec.model_validate(
            {
                "team_id": self.team_id,
                "name": self.team_id,
                "municipalities": list(self.municipalities),
                "wijken": list(self.wijken),
                "purposes": list(self.purposes),
                "fallback": self.fallback,
                "channels": list(self.channels),
            }
        )


@dataclass(frozen=True)
class MemberAccount:
    """A member of a team defined elsewhere (the seeded directory), with their token."""

    team_id: str
    member_id: str
    token: str


async def install_directory(
    database_url: str,
    master_key: str,
    teams: Iterable[TeamSpec],
    members: Iterable[TeamAccount | MemberAccount],
    partners: Iterable[PartnerAccount],
) -> None:
    """Writes teams, members with their known tokens, and partners with their known API keys
    into the database, as `hub teams` and `hub partners` would."""
    from services.shared.crypto import Vault
    from services.shared.db.engine import make_engine, make_sessionmaker

    settings = VaultSettings(master_key=master_key)
    engine = make_engine(DatabaseSettings(database_url=database_url))
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            for team in teams:
                await apply_team(session, Vault(settings), team)
            for member in members:
                await add_member(session, member.team_id, member.member_id, member.token)
            for partner in partners:
                await ensure_partner(session, partner.spec(), partner.api_key)
    finally:
        await engine.dispose()


async def create_database(server_url: str, name: str) -> str:
    """Makes database `name` on the server of `server_url`; returns its URL."""
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'create database "{name}"'))
    finally:
        await engine.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def regional_team(token: str) -> TeamAccount:
    """A team that sees every alert of the region with every purpose (tests and the demo)."""
    return TeamAccount(
        "regio-twente", tuple(MUNICIPALITIES), tuple(PURPOSES), "regio-medewerker", token
    )


def accounts(partners: Iterable[Any], keys: dict[str, str]) -> list[PartnerAccount]:
    """Partner accounts for synthetic partners, with the API keys handed out for this run."""
    return [
        PartnerAccount(
            p.partner_id, p.partner_type, keys[p.partner_id], tuple(p.event_types), p.may_send_bsn
        )
        for p in partners
    ]


@dataclass
class HubStack:
    kafka: str
    database_url: str
    partners: list[PartnerAccount]
    pseudonym_secret: str
    topic_prefix: str
    workdir: Path
    idempotent_producer: bool = True
    team_token: str = "test-team-token-regio"
    #: The directory's teams with a member each; by default one regional team holding
    #: `team_token` that covers every municipality with every purpose.
    teams: list[TeamAccount] | None = None
    #: More teams (the seeded directory of the demo), and members of theirs.
    more_teams: list[TeamSpec] = field(default_factory=list)
    more_members: list[MemberAccount] = field(default_factory=list)
    #: A database of its own on the server of `database_url`, so the team directories
    #: of two stacks do not meet.
    own_database: bool = False
    #: More environment for the services (delivery retries and SMTP in tests).
    extra_env: dict[str, str] = field(default_factory=dict)
    session_secret: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())
    master_key: str = field(default_factory=lambda: base64.b64encode(os.urandom(32)).decode())
    pseudonym_version: int = 1
    #: Secrets of earlier pseudonym versions, once the secret has been rotated.
    previous_secrets: dict[int, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def hub_settings(self) -> HubSettings:
        return HubSettings(
            kafka_bootstrap=self.kafka,
            topic_prefix=self.topic_prefix,
            matcher_app_id=f"{self.topic_prefix}-matcher",
            notifier_group_id=f"{self.topic_prefix}-notifier",
            ingest_intake_group=f"{self.topic_prefix}-ingest-intake",
        )

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HUB_KAFKA_BOOTSTRAP": self.kafka,
            "HUB_KAFKA_IDEMPOTENT_PRODUCER": str(self.idempotent_producer).lower(),
            "HUB_TOPIC_PREFIX": self.topic_prefix,
            "HUB_DATABASE_URL": self.database_url,
            "HUB_PSEUDONYM_SECRET": self.pseudonym_secret,
            "HUB_PSEUDONYM_VERSION": str(self.pseudonym_version),
            "HUB_PSEUDONYM_PREVIOUS_SECRETS": json.dumps(self.previous_secrets),
            "HUB_INGEST_PORT": str(self.ports["ingest"]),
            "HUB_MATCHER_PORT": str(self.ports["matcher"]),
            "HUB_MATCHER_APP_ID": self.hub_settings.matcher_app_id,
            "HUB_MATCHER_DATA_DIR": str(self.workdir.resolve() / "matcher"),
            "HUB_NOTIFIER_PORT": str(self.ports["notifier"]),
            "HUB_NOTIFIER_GROUP_ID": self.hub_settings.notifier_group_id,
            "HUB_INGEST_INTAKE_GROUP": self.hub_settings.ingest_intake_group,
            # The synthetic year lies in the past: its deadlines pass at once, check often.
            "HUB_NOTIFIER_OVERDUE_CHECK_S": "1",
            "HUB_NOTIFIER_PUBLIC_URL": self.url("notifier"),
            "HUB_NOTIFIER_SESSION_SECRET": self.session_secret,
            "HUB_MASTER_KEY": self.master_key,
            # Consumer lag on ingest's /metrics, read every second so tests see it move.
            "HUB_LAG_INTERVAL_S": "1",
            "HUB_LOG_JSON": "true",
            "HUB_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }

    @property
    def members(self) -> list[TeamAccount]:
        """The teams with a member each (by default the regional team with `team_token`)."""
        return self.teams if self.teams is not None else [regional_team(self.team_token)]

    def log_path(self, service: str) -> Path:
        return self.workdir / f"{service}.log"

    def __enter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in SERVICES}
        if self.own_database:
            self.database_url = asyncio.run(create_database(self.database_url, self.topic_prefix))
            self.own_database = False  # made; a second start uses it
        upgrade(DatabaseSettings(database_url=self.database_url))
        asyncio.run(
            install_directory(
                self.database_url,
                self.master_key,
                [*self.more_teams, *(t.spec() for t in self.members)],
                [*self.members, *self.more_members],
                self.partners,
            )
        )
        asyncio.run(create_topics(self.hub_settings))
        try:
            for name in SERVICES:
                self.start(name)
        except BaseException:
            self.stop_all()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def start(self, service: str) -> None:
        """Starts `service` and returns once it answers /readyz with 200."""
        with self.log_path(service).open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "run", service],
                env=self.env(),
                stdout=out,
                stderr=out,
            )
        self._processes[service] = process
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                tail = self.log_path(service).read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{service} exited with {process.returncode}:\n{tail}")
            try:
                if httpx.get(f"{self.url(service)}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service} not ready in {READY_TIMEOUT_S} s")
            time.sleep(0.2)

    def pid(self, service: str) -> int:
        return self._processes[service].pid

    def kill(self, service: str) -> None:
        """SIGKILL: the process gets no chance to flush or commit anything."""
        process = self._processes.pop(service)
        process.send_signal(signal.SIGKILL)
        process.wait()

    def stop(self, service: str) -> None:
        process = self._processes.pop(service, None)
        if process is not None:
            end_process(process, 30)

    def stop_all(self) -> None:
        for service in reversed(SERVICES):
            self.stop(service)
