"""Storage: one SQLite file (WAL) behind a small transaction API, used from one thread.

``Store`` owns a single worker thread and the one connection that lives on it; every
read and write runs there, so the event loop never blocks on SQLite and writes are
serialized. ``write`` runs its function inside ``BEGIN IMMEDIATE`` (the write lock is
taken before the first read, so a check-then-update such as a seat count stays atomic
even against another process, e.g. ``python -m core jobs``). Domain code only sees
``Tx``: ``?`` placeholders and portable SQL (see ``core._schema``).

Snapshot streaming opens its own read connection (``open_reader``) on its own thread so
a long read never holds the writer up; WAL gives it a consistent view.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from core._schema import MIGRATIONS, SCHEMA_VERSION, STATEMENTS
from core.errors import Conflict, StorageError

_LOGGER = logging.getLogger(__name__)

DB_FILENAME: Final = "core.sqlite3"
BUSY_TIMEOUT_MS: Final = 10_000

P = ParamSpec("P")
T = TypeVar("T")
Row = sqlite3.Row
Params = Sequence[Any]


class Tx:
    """A transaction's view of the database: portable SQL with ``?`` placeholders."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def one(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = self.conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Params = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: Params = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def exec(self, sql: str, params: Params = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        return self.conn.execute(sql, params).rowcount

    def many(self, sql: str, rows: Sequence[Params]) -> None:
        self.conn.executemany(sql, rows)

    def next_id(self, table: str) -> int:
        """Next free id of *table*; safe because writes hold the database write lock."""
        return int(self.scalar(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}"))


def connect(path: Path) -> sqlite3.Connection:
    """Open the database file with the core's settings (WAL, full sync, foreign keys)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Create the tables, or bring an older database up to ``SCHEMA_VERSION``."""
    with transaction(conn) as tx:
        # An older database keeps its tables as they were (IF NOT EXISTS) and its
        # version row; a new one gets the current tables and no row yet.
        for statement in STATEMENTS:
            tx.exec(statement)
        version = tx.scalar("SELECT value FROM meta WHERE name = 'schema'")
        if version is None:
            tx.exec("INSERT INTO meta (name, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            return
        for step in range(int(version) + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS.get(step, ()):
                tx.exec(statement)
        tx.exec("UPDATE meta SET value = ? WHERE name = 'schema'", (str(SCHEMA_VERSION),))


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[Tx]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise StorageError("busy", f"database busy: {exc}") from exc
    try:
        yield Tx(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        conn.execute("ROLLBACK")
        raise StorageError("busy", f"commit failed: {exc}") from exc


def _translate(exc: sqlite3.Error) -> StorageError | Conflict:
    if isinstance(exc, sqlite3.IntegrityError):
        return Conflict("conflict", f"conflicts with existing data: {exc}")
    return StorageError("storage", f"database error: {exc}")


class Store:
    """The database, reached only through one worker thread."""

    def __init__(self, data_dir: Path, on_write: Callable[[], None] | None = None) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / DB_FILENAME
        self._on_write = on_write
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="core-db")
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None

    async def open(self) -> None:
        await self._submit(self._open)

    async def close(self) -> None:
        await self._submit(self._close)
        self._pool.shutdown(wait=True)

    async def read(self, fn: Callable[Concatenate[Tx, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """Run ``fn(tx, …)`` on the database thread, outside any write transaction."""

        def call(tx: Tx) -> T:
            return fn(tx, *args, **kw)

        return await self._submit(functools.partial(self._read, call))

    async def write(self, fn: Callable[Concatenate[Tx, P], T], *args: P.args, **kw: P.kwargs) -> T:
        """Run ``fn(tx, …)`` in one write transaction; all or nothing."""

        def call(tx: Tx) -> T:
            return fn(tx, *args, **kw)

        result = await self._submit(functools.partial(self._write, call))
        if self._on_write is not None:
            self._on_write()
        return result

    def _open(self) -> None:
        self._conn = connect(self.path)
        migrate(self._conn)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _read(self, call: Callable[[Tx], T]) -> T:
        assert self._conn is not None, "store not open"
        try:
            return call(Tx(self._conn))
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    def _write(self, call: Callable[[Tx], T]) -> T:
        assert self._conn is not None, "store not open"
        try:
            with transaction(self._conn) as tx:
                return call(tx)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def _submit(self, call: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, call)


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection for long reads (snapshots), on the caller's thread."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn
