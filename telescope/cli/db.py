"""`telescope db ...`: looking after a team database."""

from __future__ import annotations

import typer

from telescope.cli.common import DbOption, TelescopeGroup, console
from telescope.errors import TelescopeError

app = typer.Typer(cls=TelescopeGroup, no_args_is_help=True, help="Look after a team database (PostgreSQL).")


@app.command("grant-reader")
def grant_reader(db: DbOption = None) -> None:
    """Create the role telescope_reader, which may only SELECT telescope's tables, and let
    `telescope query` run under it. Needs a user that may create roles."""
    from telescope.storage.database import Database
    from telescope.storage.reader import grant_reader as grant

    with Database(db, create=False) as database:
        if database.url.get_backend_name() != "postgresql":
            raise TelescopeError("grant-reader is for PostgreSQL; on SQLite, telescope query opens the file read-only")
        with database.engine.connect() as conn:
            console.print(grant(conn), highlight=False, soft_wrap=True)
