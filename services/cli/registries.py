"""What `hub teams`, `hub deliveries` and `hub partners` share: their consoles, one database
transaction per command, and refusals that exit with 2 and say why, one line each."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from pydantic import ValidationError

    from services.shared.config import DatabaseSettings

T = TypeVar("T")

out = Console()
# Errors are one line each (file: field: message), for people and for grep: never wrapped.
err = Console(stderr=True, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


def in_transaction(database: DatabaseSettings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Runs `work(session)` in one transaction: all of it is stored, or none."""
    from services.shared.db.engine import make_engine, make_sessionmaker

    async def run() -> T:
        engine = make_engine(database)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def refuse(message: str) -> NoReturn:
    err.print(f"[red]{message}[/red]")
    raise typer.Exit(2)


def refuse_invalid(exc: ValidationError, where: str = "", whole: str = "") -> NoReturn:
    """Each fault as `[where: ]field.path: message`; `whole` names a fault of the whole."""
    for error in exc.errors():
        path = ".".join(str(p) for p in error["loc"]) or whole
        err.print(f"{where}: {path}: {error['msg']}" if where else f"{path}: {error['msg']}")
    raise typer.Exit(2)
