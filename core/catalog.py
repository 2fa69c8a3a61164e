"""Events, their dates (representations), zones and rates; seat availability.

Zones and rates belong to an event; every date of the event has each zone's full
capacity. ``inventory`` counts the seats taken per date and zone (sold, printed or
imported, minus cancelled); ``take_seats`` is the one place that takes them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from core import feed
from core._util import iso, local_day, money, posix, zone_info
from core.errors import BadRequest, Conflict, NotFound

if TYPE_CHECKING:
    from core.models import DateIn, DatePatch, EventIn
    from core.store import Tx

DEFAULT_DOORS_BEFORE_S: Final = timedelta(hours=1).total_seconds()
MAX_ZONE_ID: Final = 0xFFFF
"""Signed codes carry the zone in 16 bits."""
MIN_TIME: Final = 0.0
MAX_TIME: Final = datetime(9999, 1, 1, tzinfo=UTC).timestamp()
"""Date times the core can store, convert to local days and give back in UTC (a year-1 or
year-9999 time with an offset falls outside ``datetime``'s range once in UTC)."""


def create_event(tx: Tx, body: EventIn) -> dict[str, Any]:
    if body.timezone:
        zone_info(body.timezone)
    venue = feed.ensure_venue(tx, body.venue, body.timezone or "UTC")
    if body.timezone:
        current = tx.scalar("SELECT timezone FROM venues WHERE id = ?", (venue,))
        has_events = tx.one("SELECT 1 FROM events WHERE venue_id = ?", (venue,)) is not None
        if current != body.timezone and not has_events:
            # A venue made by a node token before any event takes the first event's zone.
            tx.exec("UPDATE venues SET timezone = ? WHERE id = ?", (body.timezone, venue))
        elif current != body.timezone:
            raise Conflict(
                "timezone_mismatch", f"venue {body.venue!r} keeps its timezone {current}"
            )
    names = [z.name for z in body.zones]
    if len(set(names)) != len(names):
        raise BadRequest("duplicate_zone", "zone names must be unique within an event")
    event_id = tx.next_id("events")
    tx.exec(
        "INSERT INTO events (id, venue_id, name, currency, created_at) VALUES (?, ?, ?, ?, ?)",
        (event_id, venue, body.name, body.currency, time.time()),
    )
    zone_ids = []
    for zone in body.zones:
        zone_id = tx.next_id("zones")
        if zone_id > MAX_ZONE_ID:
            raise Conflict("zones_exhausted", "no zone id left")
        tx.exec(
            "INSERT INTO zones (id, event_id, name, capacity) VALUES (?, ?, ?, ?)",
            (zone_id, event_id, zone.name, zone.capacity),
        )
        zone_ids.append(zone_id)
    for rate in body.rates:
        tx.exec(
            "INSERT INTO rates (id, event_id, name, price) VALUES (?, ?, ?, ?)",
            (tx.next_id("rates"), event_id, rate.name, str(money(rate.price))),
        )
    for date in body.dates:
        _insert_date(tx, event_id, venue, date)
    feed.catalog_changed(tx, venue)
    return get_event(tx, event_id)


def add_date(tx: Tx, event_id: int, body: DateIn) -> dict[str, Any]:
    event = _event_row(tx, event_id)
    _insert_date(tx, event_id, int(event["venue_id"]), body)
    feed.catalog_changed(tx, int(event["venue_id"]))
    return get_event(tx, event_id)


def patch_date(tx: Tx, date_id: int, body: DatePatch) -> dict[str, Any]:
    """Move a date (start, end, doors); the gates get the new window."""
    row = date_row(tx, date_id)
    start = posix(body.start) if body.start else float(row["starts_at"])
    end = posix(body.end) if body.end else float(row["ends_at"])
    doors = posix(body.doors_open) if body.doors_open else float(row["doors_open"])
    if body.start and not body.doors_open:
        doors = start - (float(row["starts_at"]) - float(row["doors_open"]))
    _check_window(start, end, doors)
    tz = zone_info(str(row["timezone"]))
    tx.exec(
        "UPDATE dates SET starts_at = ?, ends_at = ?, doors_open = ?, day = ? WHERE id = ?",
        (start, end, doors, local_day(start, tz), date_id),
    )
    feed.catalog_changed(tx, int(row["venue_id"]))
    return _date_out(tx.one("SELECT * FROM dates WHERE id = ?", (date_id,)))


def get_event(tx: Tx, event_id: int) -> dict[str, Any]:
    event = _event_row(tx, event_id)
    return {
        "id": event_id,
        "name": event["name"],
        "venue": event["venue"],
        "currency": event["currency"],
        "dates": [
            _date_out(r)
            for r in tx.all("SELECT * FROM dates WHERE event_id = ? ORDER BY id", (event_id,))
        ],
        "zones": [
            {"id": r["id"], "name": r["name"], "capacity": r["capacity"]}
            for r in tx.all("SELECT * FROM zones WHERE event_id = ? ORDER BY id", (event_id,))
        ],
        "rates": [
            {"id": r["id"], "name": r["name"], "price": r["price"], "currency": event["currency"]}
            for r in tx.all("SELECT * FROM rates WHERE event_id = ? ORDER BY id", (event_id,))
        ],
    }


def list_events(tx: Tx) -> list[dict[str, Any]]:
    return [get_event(tx, int(r["id"])) for r in tx.all("SELECT id FROM events ORDER BY id")]


def availability(tx: Tx, date_id: int) -> dict[str, Any]:
    row = date_row(tx, date_id)
    zones = []
    for z in tx.all(
        "SELECT z.id, z.name, z.capacity, COALESCE(i.taken, 0) AS taken FROM zones z"
        " LEFT JOIN inventory i ON i.zone_id = z.id AND i.date_id = ?"
        " WHERE z.event_id = ? ORDER BY z.id",
        (date_id, row["event_id"]),
    ):
        zones.append(
            {
                "zone": z["id"],
                "name": z["name"],
                "capacity": z["capacity"],
                "sold": z["taken"],
                "available": max(0, z["capacity"] - z["taken"]),
            }
        )
    return {"date": date_id, "event": row["event_id"], "zones": zones}


def take_seats(tx: Tx, date_id: int, zone_id: int, count: int) -> None:
    """Take *count* seats or raise ``Conflict`` (sold out); atomic within the write lock."""
    capacity = tx.scalar("SELECT capacity FROM zones WHERE id = ?", (zone_id,))
    changed = tx.exec(
        "UPDATE inventory SET taken = taken + ? WHERE date_id = ? AND zone_id = ?"
        " AND taken + ? <= ?",
        (count, date_id, zone_id, count, capacity),
    )
    if changed != 1:
        raise Conflict("sold_out", f"not enough seats left in zone {zone_id} for date {date_id}")


def release_seats(tx: Tx, date_id: int, zone_id: int, count: int) -> None:
    tx.exec(
        "UPDATE inventory SET taken = taken - ? WHERE date_id = ? AND zone_id = ?",
        (count, date_id, zone_id),
    )


def date_row(tx: Tx, date_id: int) -> Any:
    row = tx.one(
        "SELECT d.*, e.venue_id, v.timezone FROM dates d JOIN events e ON e.id = d.event_id"
        " JOIN venues v ON v.id = e.venue_id WHERE d.id = ?",
        (date_id,),
    )
    if row is None:
        raise NotFound("date_not_found", f"no date {date_id}")
    return row


def sale_line(tx: Tx, date_id: int, zone_id: int, rate_id: int) -> Any:
    """Check that zone and rate belong to the date's event; return the joined row."""
    row = tx.one(
        "SELECT d.id AS date_id, d.event_id, e.venue_id, e.currency, z.id AS zone_id,"
        " r.id AS rate_id, r.price FROM dates d JOIN events e ON e.id = d.event_id"
        " LEFT JOIN zones z ON z.id = ? AND z.event_id = d.event_id"
        " LEFT JOIN rates r ON r.id = ? AND r.event_id = d.event_id WHERE d.id = ?",
        (zone_id, rate_id, date_id),
    )
    if row is None:
        raise NotFound("date_not_found", f"no date {date_id}")
    if row["zone_id"] is None:
        raise NotFound("zone_not_found", f"zone {zone_id} is not a zone of date {date_id}")
    if row["rate_id"] is None:
        raise NotFound("rate_not_found", f"rate {rate_id} is not a rate of date {date_id}")
    return row


def _event_row(tx: Tx, event_id: int) -> Any:
    row = tx.one(
        "SELECT e.*, v.name AS venue, v.timezone FROM events e JOIN venues v"
        " ON v.id = e.venue_id WHERE e.id = ?",
        (event_id,),
    )
    if row is None:
        raise NotFound("event_not_found", f"no event {event_id}")
    return row


def _insert_date(tx: Tx, event_id: int, venue: int, body: DateIn) -> int:
    start = posix(body.start)
    end = posix(body.end)
    doors = posix(body.doors_open) if body.doors_open else start - DEFAULT_DOORS_BEFORE_S
    _check_window(start, end, doors)
    tz = zone_info(str(tx.scalar("SELECT timezone FROM venues WHERE id = ?", (venue,))))
    date_id = tx.next_id("dates")
    tx.exec(
        "INSERT INTO dates (id, event_id, starts_at, ends_at, doors_open, day)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (date_id, event_id, start, end, doors, local_day(start, tz)),
    )
    tx.many(
        "INSERT INTO inventory (date_id, zone_id, taken) VALUES (?, ?, 0)",
        [
            (date_id, z["id"])
            for z in tx.all("SELECT id FROM zones WHERE event_id = ?", (event_id,))
        ],
    )
    return date_id


def _check_window(start: float, end: float, doors: float) -> None:
    if not all(MIN_TIME <= t <= MAX_TIME for t in (start, end, doors)):
        raise BadRequest("bad_dates", "dates must lie between 1970 and 9999")
    if end <= start:
        raise BadRequest("bad_dates", "a date must end after it starts")
    if doors > start:
        raise BadRequest("bad_dates", "doors must open before the start")


def _date_out(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "event": row["event_id"],
        "start": iso(row["starts_at"]),
        "end": iso(row["ends_at"]),
        "doors_open": iso(row["doors_open"]),
    }
