"""Pass products, pass updates and media (RFID cards) attached to passes.

A pass is one row of ``tickets`` (kind pass) with one code covering all its events. The
product says which events it covers and its limits (the gates apply them):

- season: ``max_entries`` dates over the product's events (e.g. 10 shows);
- event choice (``choice``): the buyer picks one date per event from the product's list
  (at most one per event); the price is the sum of the chosen events' prices;
- ``per_day``: at most one event per calendar day;
- ``one_day``: several sites, all on one day (chosen by the first entry).

Pass update: adding an event to a product extends every pass already sold. Plain
products cover it through the catalogue; event-choice passes get the new event's date
(given, or the event's only date) added to their chosen dates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from core import feed
from core._util import money
from core.errors import BadRequest, Conflict, NotFound
from core.issuing import Line, ticket_out, ticket_row
from core.models import MAX_ID, TicketOut
from sync.codes import Kind
from sync.snapshot import Status

if TYPE_CHECKING:
    from core.models import PassProductIn, PassUpdateIn
    from core.store import Tx


@dataclass(frozen=True, slots=True)
class PassLine:
    line: Line
    currency: str


def create_product(tx: Tx, body: PassProductIn) -> dict[str, Any]:
    venue = feed.venue_id(tx, body.venue)
    events = [e.event for e in body.events]
    if len(set(events)) != len(events):
        raise BadRequest("duplicate_event", "each event may appear once in a pass product")
    for item in body.events:
        _event_in_venue(tx, item.event, venue)
        if body.choice and item.price is None:
            raise BadRequest("price_required", "an event-choice pass needs a price per event")
    product_id = tx.next_id("pass_products")
    if product_id > MAX_ID:
        raise Conflict("products_exhausted", "no pass product id left")
    tx.exec(
        "INSERT INTO pass_products (id, venue_id, name, price, currency, choice, max_entries,"
        " per_event, per_day, one_day, quota, sold, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
        (
            product_id,
            venue,
            body.name,
            str(money(body.price)),
            body.currency,
            int(body.choice),
            body.max_entries,
            # An event-choice pass admits at most one date per event, by definition.
            int(body.per_event or body.choice),
            int(body.per_day),
            int(body.one_day),
            body.quota,
            time.time(),
        ),
    )
    for item in body.events:
        price = None if item.price is None else str(money(item.price))
        tx.exec(
            "INSERT INTO pass_product_events (product_id, event_id, price) VALUES (?, ?, ?)",
            (product_id, item.event, price),
        )
    feed.catalog_changed(tx, venue)
    return get_product(tx, product_id)


def get_product(tx: Tx, product_id: int) -> dict[str, Any]:
    row = _product_row(tx, product_id)
    return {
        "id": row["id"],
        "name": row["name"],
        "venue": row["venue"],
        "price": row["price"],
        "currency": row["currency"],
        "choice": bool(row["choice"]),
        "max_entries": row["max_entries"],
        "per_event": bool(row["per_event"]),
        "per_day": bool(row["per_day"]),
        "one_day": bool(row["one_day"]),
        "quota": row["quota"],
        "sold": row["sold"],
        "events": [
            {"event": e["event_id"], "price": e["price"]}
            for e in tx.all(
                "SELECT event_id, price FROM pass_product_events WHERE product_id = ?"
                " ORDER BY event_id",
                (product_id,),
            )
        ],
    }


def list_products(tx: Tx) -> list[dict[str, Any]]:
    return [get_product(tx, int(r["id"])) for r in tx.all("SELECT id FROM pass_products")]


def pass_line(tx: Tx, product_id: int, choices: list[int] | None, quantity: int) -> PassLine:
    """Validate a pass order line; take ``quantity`` from the product's quota."""
    row = _product_row(tx, product_id)
    prices = {
        int(e["event_id"]): e["price"]
        for e in tx.all(
            "SELECT event_id, price FROM pass_product_events WHERE product_id = ?", (product_id,)
        )
    }
    dates: tuple[int, ...] = ()
    price = Decimal(row["price"])
    if row["choice"]:
        if not choices:
            raise BadRequest("choices_required", "an event-choice pass needs chosen dates")
        seen: set[int] = set()
        price = Decimal(0)
        for date_id in choices:
            event = tx.scalar("SELECT event_id FROM dates WHERE id = ?", (date_id,))
            if event is None:
                raise NotFound("date_not_found", f"no date {date_id}")
            if int(event) not in prices:
                raise BadRequest("bad_choice", f"date {date_id} is not one of this pass's events")
            if int(event) in seen:
                raise BadRequest("bad_choice", "at most one date per event")
            seen.add(int(event))
            price += Decimal(prices[int(event)])
        dates = tuple(sorted(choices))
    elif choices:
        raise BadRequest("bad_choice", "only event-choice passes take choices")
    taken = tx.exec(
        "UPDATE pass_products SET sold = sold + ?"
        " WHERE id = ? AND (quota = 0 OR sold + ? <= quota)",
        (quantity, product_id, quantity),
    )
    if taken != 1:
        raise Conflict("sold_out", f"pass product {product_id} is sold out")
    line = Line(Kind.PASS, int(row["venue_id"]), product_id, 0, 0, None, price, dates)
    return PassLine(line, str(row["currency"]))


def add_event(tx: Tx, product_id: int, body: PassUpdateIn) -> dict[str, Any]:
    """Pass update: add an event to a product; extend its sold passes; say how many."""
    row = _product_row(tx, product_id)
    venue = int(row["venue_id"])
    _event_in_venue(tx, body.event, venue)
    if tx.one(
        "SELECT 1 FROM pass_product_events WHERE product_id = ? AND event_id = ?",
        (product_id, body.event),
    ):
        raise Conflict("already_included", f"event {body.event} is already in this pass")
    if row["choice"] and body.price is None:
        raise BadRequest("price_required", "an event-choice pass needs a price per event")
    price = None if body.price is None else str(money(body.price))
    tx.exec(
        "INSERT INTO pass_product_events (product_id, event_id, price) VALUES (?, ?, ?)",
        (product_id, body.event, price),
    )
    new_date = _choice_date(tx, body) if row["choice"] else None
    passes = tx.all(
        "SELECT id, dates FROM tickets WHERE kind = ? AND event_id = ? AND status != ?",
        (int(Kind.PASS), product_id, int(Status.CANCELLED)),
    )
    feed.catalog_changed(tx, venue)
    for p in passes:
        if new_date is not None:
            chosen = [int(d) for d in p["dates"].split(",")] if p["dates"] else []
            chosen = sorted({*chosen, new_date})
            tx.exec(
                "UPDATE tickets SET dates = ? WHERE id = ?",
                (",".join(map(str, chosen)), p["id"]),
            )
        feed.record_changed(tx, venue, int(p["id"]))
    return {"product": get_product(tx, product_id), "updated": len(passes)}


def attach_media(tx: Tx, ticket_id: int, uid: str) -> TicketOut:
    """Attach an RFID card UID so the card itself opens the gate."""
    row = ticket_row(tx, ticket_id)
    if row["status"] == Status.CANCELLED:
        raise Conflict("cancelled", f"ticket {ticket_id} is cancelled")
    uid = uid.upper()
    owner = tx.scalar("SELECT ticket_id FROM media WHERE uid = ?", (uid,))
    if owner is not None and int(owner) != ticket_id:
        previous = ticket_row(tx, int(owner))
        if previous["status"] != Status.CANCELLED:
            raise Conflict("media_in_use", f"card {uid} is attached to another ticket")
        # The card of a cancelled ticket opens nothing: it goes to the new one (a holder
        # whose pass was cancelled and who buys another keeps their card).
        tx.exec("UPDATE media SET ticket_id = ? WHERE uid = ?", (ticket_id, uid))
        store_media(tx, previous)
        store_media(tx, row)
    elif owner is None:
        tx.exec(
            "INSERT INTO media (uid, ticket_id, created_at) VALUES (?, ?, ?)",
            (uid, ticket_id, time.time()),
        )
        store_media(tx, row)
    return ticket_out(ticket_row(tx, ticket_id))


def detach_media(tx: Tx, ticket_id: int, uid: str) -> TicketOut:
    row = ticket_row(tx, ticket_id)
    if tx.exec("DELETE FROM media WHERE uid = ? AND ticket_id = ?", (uid.upper(), ticket_id)) != 1:
        raise NotFound("media_not_found", f"card {uid} is not attached to ticket {ticket_id}")
    store_media(tx, row)
    return ticket_out(ticket_row(tx, ticket_id))


def pass_end(tx: Tx, row: Any) -> float:
    """When a pass is over: the end of the last date it covers (its chosen dates, or
    every date of its product's events); 0 when it covers none."""
    if row["dates"]:
        ids = [int(d) for d in str(row["dates"]).split(",")]
        marks = ",".join("?" * len(ids))
        end = tx.scalar(f"SELECT MAX(ends_at) FROM dates WHERE id IN ({marks})", tuple(ids))
    else:
        end = tx.scalar(
            "SELECT MAX(d.ends_at) FROM dates d JOIN pass_product_events p"
            " ON p.event_id = d.event_id WHERE p.product_id = ?",
            (row["event_id"],),
        )
    return float(end or 0.0)


def store_media(tx: Tx, row: Any) -> None:
    uids = [
        r["uid"]
        for r in tx.all("SELECT uid FROM media WHERE ticket_id = ? ORDER BY uid", (row["id"],))
    ]
    tx.exec("UPDATE tickets SET media = ? WHERE id = ?", (",".join(uids), row["id"]))
    feed.record_changed(tx, int(row["venue_id"]), int(row["id"]))


def _choice_date(tx: Tx, body: PassUpdateIn) -> int:
    dates = [int(r["id"]) for r in tx.all("SELECT id FROM dates WHERE event_id = ?", (body.event,))]
    if body.date is not None:
        if body.date not in dates:
            raise BadRequest("bad_choice", f"date {body.date} is not a date of event {body.event}")
        return body.date
    if len(dates) != 1:
        raise BadRequest("date_required", "the event has several dates: say which one")
    return dates[0]


def _event_in_venue(tx: Tx, event_id: int, venue: int) -> None:
    found = tx.scalar("SELECT venue_id FROM events WHERE id = ?", (event_id,))
    if found is None:
        raise NotFound("event_not_found", f"no event {event_id}")
    if int(found) != venue:
        raise BadRequest("wrong_venue", f"event {event_id} is not at this pass's venue")


def _product_row(tx: Tx, product_id: int) -> Any:
    row = tx.one(
        "SELECT p.*, v.name AS venue FROM pass_products p JOIN venues v ON v.id = p.venue_id"
        " WHERE p.id = ?",
        (product_id,),
    )
    if row is None:
        raise NotFound("product_not_found", f"no pass product {product_id}")
    return row
