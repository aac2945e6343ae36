"""The SQLite file: opening it safely, migrating it, transactions, and the size cap.

One file holds everything (sessions, outbox, auth, readings): a transaction across attached
databases is not atomic in WAL mode (SQLite docs, "ATTACH DATABASE"), and a session change
must commit together with the outbox row that reports it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from edge_agent.errors import StoreError
from edge_agent.store.schema import MIGRATIONS, SCHEMA_VERSION

#: How long a writer waits for another connection (the CLI beside the daemon) to finish.
BUSY_TIMEOUT_MS = 5000
#: A store directory the agent creates is its own: the store holds the authorization list,
#: sessions and every decision (the control socket beside it is 0600 for the same reason).
STORE_DIR_MODE = 0o700


def ensure_store_dir(path: Path | str) -> None:
    """Create the directories above the store file that are missing, ``0700``.

    An existing directory is left as it is: its owner and mode are the operator's choice.
    Without this the first start on a fresh system fails with SQLite's bare "unable to open
    database file".
    """
    missing: list[Path] = []
    parent = Path(path).absolute().parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=STORE_DIR_MODE, exist_ok=True)
            # mkdir's mode passes through the umask; the store's directory is owner-only
            # whatever the umask.
            directory.chmod(STORE_DIR_MODE)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store's directory {directory}: {exc.strerror}",
                path=str(path),
            ) from exc


def connect(path: Path | str) -> sqlite3.Connection:
    """Open ``path`` in WAL mode with ``synchronous=FULL`` and bring its schema up to date.

    ``synchronous`` is a per-connection setting (SQLite docs, "PRAGMA synchronous"), so every
    connection sets it: WAL with NORMAL may lose the last commits on power loss, FULL cannot.
    Missing directories above ``path`` are created (:func:`ensure_store_dir`).
    """
    ensure_store_dir(path)
    try:
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open store {path}: {exc}", path=str(path)) from exc
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"store {path} refused WAL mode (got {mode})", path=str(path))
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot prepare store {path}: {exc}", path=str(path)) from exc
    except StoreError:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this file has not seen; return the schema version reached."""
    with transaction(conn):
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store schema version {version} is newer than this agent's {SCHEMA_VERSION}"
            )
        for target in range(version, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[target]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target + 1}")
    return SCHEMA_VERSION


def _statements(script: str) -> Iterator[str]:
    """Split a migration into statements (executescript would COMMIT our transaction)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer
            buffer = ""
    if buffer.strip():
        raise StoreError(f"incomplete SQL statement in migration: {buffer.strip()[:60]!r}")


@contextmanager
def translated(what: str, *, path: Path | None = None) -> Iterator[None]:
    """sqlite3's errors inside the block as :class:`StoreError` ("``what``: …"): the one
    translation of the standard library's SQLite errors, for code outside :mod:`edge_agent.store`
    that runs queries of its own (the authorizer's transactions, the CLI's read-only views)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(f"{what}: {exc}", path=None if path is None else str(path)) from exc


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on any exception).

    IMMEDIATE takes the write lock at the start, so a writer never fails half-way through
    with SQLITE_BUSY after reading.
    """
    if conn.in_transaction:
        # Nested use joins the outer transaction: the outer one commits or rolls back.
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database file in use (free pages are reused before the file grows)."""
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    return (pages - free) * page_size


def integrity_ok(conn: sqlite3.Connection) -> bool:
    return [tuple(r) for r in conn.execute("PRAGMA integrity_check")] == [("ok",)]


def iso(moment: datetime) -> str:
    """How the store writes a time: ISO 8601 in UTC, so text order is time order."""
    return moment.astimezone(UTC).isoformat()


def get_state(conn: sqlite3.Connection, key: str) -> str | None:
    """A key/value state entry (clock-sync seen, last boot, relay test results …)."""
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_state(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO kv (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
