"""Database URLs: what `--db` means, and how a URL or a driver error is shown without its password."""

from __future__ import annotations

import importlib.util
import urllib.parse
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from telescope.errors import StorageError

DEFAULT_DB = "telescope.db"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def resolve_url(url: str | None) -> URL:
    """The SQLAlchemy URL for `--db`: None means ./telescope.db, a plain path means a SQLite
    file, otherwise a sqlite:/// or postgresql:// URL."""
    if url is None or url == "":
        return URL.create("sqlite", database=str(Path(DEFAULT_DB).absolute()))
    if "://" not in url:
        path = Path(url).expanduser().absolute()
        if path.suffix.lower() not in SQLITE_SUFFIXES and not path.is_file():
            raise StorageError(
                f"--db {url!r} is neither a database URL nor a SQLite file ({', '.join(SQLITE_SUFFIXES)}): "
                f"write sqlite:///{url} to create a SQLite file of that name, or postgresql://..."
            )
        return URL.create("sqlite", database=str(path))
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise StorageError(
            f"invalid database URL {_redact_text(url)!r}: expected sqlite:///FILE or postgresql://..."
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StorageError(
            f"unsupported database {parsed.get_backend_name()!r} in {safe_url(parsed)}: use sqlite:///FILE or postgresql://..."
        )
    if parsed.get_backend_name() == "postgresql":
        parsed = _postgres_driver(parsed)
    return parsed


def _postgres_driver(url: URL) -> URL:
    """psycopg 3 for postgresql:// (named explicitly: SQLAlchemy 2.0 would pick psycopg2);
    postgresql+psycopg2:// only where psycopg2 happens to be installed."""
    driver = url.drivername.partition("+")[2]
    if driver in ("", "psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if driver == "psycopg2" and importlib.util.find_spec("psycopg2") is None:
        raise StorageError(
            f"postgresql+psycopg2:// needs psycopg2, which is not installed: telescope uses psycopg 3, "
            f"so write {safe_url(url)}"
        )
    return url


def _secrets(url: URL) -> list[str]:
    """The URL's password, whether after the user name or as a `?password=` parameter."""
    values = [url.password, url.query.get("password")]
    flat = [v for value in values for v in (value if isinstance(value, tuple) else (value,))]
    return [str(v) for v in flat if v]


def safe_url(url: URL) -> str:
    """The URL as text with any password masked (and without the driver name), for messages."""
    if "password" in url.query:
        url = url.update_query_dict({"password": "***"})
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)


def _redact_text(url: str) -> str:
    # Best effort for text that did not parse: drop anything between "//" and "@".
    head, sep, tail = url.partition("://")
    if sep and "@" in tail:
        tail = "***@" + tail.rsplit("@", 1)[1]
    return head + sep + tail


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL; None for PostgreSQL and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def read_only_uri(path: Path) -> str:
    """The sqlite3 URI that opens `path` read-only."""
    return f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"


def error_line(error: BaseException, url: URL) -> str:
    """First line of a driver error, never showing the password."""
    original = getattr(error, "orig", None) or error
    line = (str(original).strip().splitlines() or [type(original).__name__])[0]
    for secret in _secrets(url):
        line = line.replace(secret, "***")
    return line
