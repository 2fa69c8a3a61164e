"""Opening a database made by an older core brings it to the current schema."""

from __future__ import annotations

import sqlite3

from core._schema import SCHEMA_VERSION
from core.store import connect, migrate


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def test_version_1_gains_the_scan_reference_of_changes(tmp_path):
    conn = connect(tmp_path / "core.sqlite3")
    conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute("INSERT INTO meta VALUES ('schema', '1')")
    conn.execute(
        "CREATE TABLE changes (venue_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
        " kind TEXT NOT NULL, ref INTEGER NOT NULL, at REAL NOT NULL,"
        " PRIMARY KEY (venue_id, seq))"
    )
    conn.execute("INSERT INTO changes VALUES (1, 1, 'record', 5, 0.0)")
    migrate(conn)
    assert columns(conn, "changes")[-1] == "scan_id"
    assert [tuple(r) for r in conn.execute("SELECT kind, ref, scan_id FROM changes")] == [
        ("record", 5, None)
    ]
    version = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0]
    assert version == str(SCHEMA_VERSION) == "2"
    migrate(conn)  # idempotent
    assert columns(conn, "changes").count("scan_id") == 1
    conn.close()


def test_a_new_database_starts_at_the_current_version(tmp_path):
    conn = connect(tmp_path / "core.sqlite3")
    migrate(conn)
    migrate(conn)
    assert "scan_id" in columns(conn, "changes")
    assert [tuple(r) for r in conn.execute("SELECT value FROM meta")] == [(str(SCHEMA_VERSION),)]
    conn.close()
