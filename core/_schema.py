"""The core's tables, in SQL that SQLite and PostgreSQL both accept.

Portability rules kept here: ``?`` placeholders (a PostgreSQL driver translates them),
``INTEGER PRIMARY KEY`` ids assigned by the core (no AUTOINCREMENT), ``RETURNING``,
``ON CONFLICT DO NOTHING``, money as decimal text, times as POSIX seconds (REAL), and
booleans as 0/1 integers. Ticket and pass rows share one table and one id space, since
the edge keys its index by that id.
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 2
"""2: ``changes.scan_id`` (a scan announced as ``ScanAdmitted``). A new table needs no
step: every start creates the tables that are missing (``card_moves`` came so)."""

STATEMENTS: Final = (
    """CREATE TABLE IF NOT EXISTS meta (
        name TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS venues (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, timezone TEXT NOT NULL,
        seq INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY, venue_id INTEGER NOT NULL REFERENCES venues(id),
        name TEXT NOT NULL, currency TEXT NOT NULL, created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS dates (
        id INTEGER PRIMARY KEY, event_id INTEGER NOT NULL REFERENCES events(id),
        starts_at REAL NOT NULL, ends_at REAL NOT NULL, doors_open REAL NOT NULL,
        day INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS zones (
        id INTEGER PRIMARY KEY, event_id INTEGER NOT NULL REFERENCES events(id),
        name TEXT NOT NULL, capacity INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS rates (
        id INTEGER PRIMARY KEY, event_id INTEGER NOT NULL REFERENCES events(id),
        name TEXT NOT NULL, price TEXT NOT NULL)""",
    # Seats taken per date and zone (sold, printed or imported, not cancelled). Sales
    # increment it with a guarded UPDATE, so capacity holds under concurrent orders.
    """CREATE TABLE IF NOT EXISTS inventory (
        date_id INTEGER NOT NULL, zone_id INTEGER NOT NULL, taken INTEGER NOT NULL,
        PRIMARY KEY (date_id, zone_id))""",
    """CREATE TABLE IF NOT EXISTS pass_products (
        id INTEGER PRIMARY KEY, venue_id INTEGER NOT NULL REFERENCES venues(id),
        name TEXT NOT NULL, price TEXT NOT NULL, currency TEXT NOT NULL,
        choice INTEGER NOT NULL, max_entries INTEGER NOT NULL, per_event INTEGER NOT NULL,
        per_day INTEGER NOT NULL, one_day INTEGER NOT NULL, quota INTEGER NOT NULL,
        sold INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS pass_product_events (
        product_id INTEGER NOT NULL, event_id INTEGER NOT NULL, price TEXT,
        PRIMARY KEY (product_id, event_id))""",
    """CREATE TABLE IF NOT EXISTS orders (
        id INTEGER PRIMARY KEY, number TEXT NOT NULL UNIQUE, status TEXT NOT NULL,
        payment TEXT NOT NULL, channel TEXT NOT NULL, customer_name TEXT NOT NULL,
        customer_email TEXT NOT NULL, total TEXT NOT NULL, currency TEXT NOT NULL,
        created_at REAL NOT NULL, paid_at REAL, cancelled_at REAL, cancel_reason TEXT,
        refund_method TEXT, reminder_days INTEGER NOT NULL, reminders INTEGER NOT NULL,
        reminders_sent INTEGER NOT NULL DEFAULT 0)""",
    # kind/status/channel use sync's integer values (Kind, Status, Channel).
    """CREATE TABLE IF NOT EXISTS tickets (
        id INTEGER PRIMARY KEY, kind INTEGER NOT NULL, status INTEGER NOT NULL,
        venue_id INTEGER NOT NULL, event_id INTEGER NOT NULL, date_id INTEGER NOT NULL,
        zone_id INTEGER NOT NULL, rate_id INTEGER, price TEXT NOT NULL,
        code TEXT NOT NULL, digest BLOB NOT NULL UNIQUE, key_id INTEGER NOT NULL,
        channel INTEGER NOT NULL, sold INTEGER NOT NULL, order_id INTEGER,
        order_number TEXT NOT NULL, holder TEXT NOT NULL, media TEXT NOT NULL,
        dates TEXT NOT NULL, import_id INTEGER, created_at REAL NOT NULL,
        cancelled_at REAL, cancel_reason TEXT, refund_method TEXT)""",
    "CREATE INDEX IF NOT EXISTS tickets_venue ON tickets (venue_id, id)",
    "CREATE INDEX IF NOT EXISTS tickets_order ON tickets (order_id)",
    "CREATE INDEX IF NOT EXISTS tickets_product ON tickets (kind, event_id)",
    """CREATE TABLE IF NOT EXISTS media (
        uid TEXT PRIMARY KEY, ticket_id INTEGER NOT NULL, created_at REAL NOT NULL)""",
    # RFID cards of a renewed pass that move to the new pass once the old one is over.
    """CREATE TABLE IF NOT EXISTS card_moves (
        from_id INTEGER NOT NULL, to_id INTEGER NOT NULL, created_at REAL NOT NULL,
        PRIMARY KEY (from_id, to_id))""",
    """CREATE TABLE IF NOT EXISTS keys (
        id INTEGER PRIMARY KEY, private BLOB NOT NULL, public BLOB NOT NULL,
        active INTEGER NOT NULL, created_at REAL NOT NULL, revoked_at REAL)""",
    # kind: record (ref = ticket id), catalog (ref = 0) or scan (ref = ticket id,
    # scan_id = the scan in ``scans``, same venue).
    """CREATE TABLE IF NOT EXISTS changes (
        venue_id INTEGER NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
        ref INTEGER NOT NULL, at REAL NOT NULL, scan_id TEXT,
        PRIMARY KEY (venue_id, seq))""",
    """CREATE TABLE IF NOT EXISTS node_tokens (
        digest BLOB PRIMARY KEY, venue_id INTEGER NOT NULL, name TEXT NOT NULL,
        created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, kind TEXT NOT NULL,
        email TEXT NOT NULL, subject TEXT NOT NULL, body TEXT NOT NULL,
        created_at REAL NOT NULL, sent_at REAL)""",
    """CREATE TABLE IF NOT EXISTS cancellations (
        id INTEGER PRIMARY KEY, order_id INTEGER, tickets TEXT NOT NULL,
        amount TEXT NOT NULL, refund_method TEXT NOT NULL, reason TEXT NOT NULL,
        at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS imports (
        id INTEGER PRIMARY KEY, reseller TEXT NOT NULL, date_id INTEGER NOT NULL,
        zone_id INTEGER NOT NULL, rate_id INTEGER NOT NULL, count INTEGER NOT NULL,
        created_at REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS scans (
        venue_id INTEGER NOT NULL, scan_id TEXT NOT NULL, node TEXT NOT NULL,
        ticket_id INTEGER NOT NULL, result TEXT NOT NULL, reason TEXT NOT NULL,
        direction TEXT NOT NULL, gate TEXT NOT NULL, mode TEXT NOT NULL,
        date_id INTEGER NOT NULL, scanned_at REAL NOT NULL, logged_at REAL NOT NULL,
        offline INTEGER NOT NULL, received_at REAL NOT NULL,
        PRIMARY KEY (venue_id, scan_id))""",
    "CREATE INDEX IF NOT EXISTS scans_ticket ON scans (ticket_id)",
    """CREATE TABLE IF NOT EXISTS quick_cancels (
        venue_id INTEGER NOT NULL, scan_id TEXT NOT NULL, ticket_id INTEGER NOT NULL,
        result TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL,
        PRIMARY KEY (venue_id, scan_id))""",
)

MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    2: ("ALTER TABLE changes ADD COLUMN scan_id TEXT",),
}
"""Statements that bring a database of version ``n - 1`` to version ``n``. A new
database gets the current ``STATEMENTS`` and skips them."""
