"""Pass renewal: a holder's pass is renewed into a new product (next season).

The renewal is a new order for the same customer. The old pass stays valid for what is
left of its own season, and so do its RFID cards: a card opens one pass at the gates,
so it moves to the new pass only once the old one is over (its last date has ended, or
it was cancelled). ``move_renewed_cards`` does that; the core's periodic job runs it.
A renewal after the old season's end moves the cards at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from core.errors import Conflict
from core.issuing import ticket_row
from core.models import CustomerIn, ItemIn, OrderIn
from core.orders import get_order, place_order
from core.passes import pass_end, store_media
from sync.codes import Kind
from sync.snapshot import Status

if TYPE_CHECKING:
    from core.models import OrderOut, RenewIn
    from core.orders import InvoicePolicy
    from core.store import Tx


def renew(tx: Tx, pass_id: int, body: RenewIn, policy: InvoicePolicy) -> OrderOut:
    old = ticket_row(tx, pass_id)
    if old["kind"] != Kind.PASS:
        raise Conflict("not_a_pass", f"ticket {pass_id} is not a pass")
    if old["status"] == Status.CANCELLED:
        raise Conflict("cancelled", f"pass {pass_id} is cancelled")
    email = tx.scalar("SELECT customer_email FROM orders WHERE id = ?", (old["order_id"],))
    order = place_order(
        tx,
        OrderIn(
            customer=CustomerIn(old["holder"] or "Pass holder", email or ""),
            payment=body.payment,
            channel=body.channel,
            items=[ItemIn(quantity=1, pass_=body.product, choices=body.choices)],
        ),
        policy,
    )
    new = ticket_row(tx, order.tickets[0].id)
    now = time.time()
    if pass_end(tx, old) > now:
        tx.exec(
            "INSERT INTO card_moves (from_id, to_id, created_at) VALUES (?, ?, ?)",
            (pass_id, new["id"], now),
        )
    else:
        _move_cards(tx, old, new)
    return get_order(tx, order.number)


def move_renewed_cards(tx: Tx, now: float) -> int:
    """Move the cards of renewed passes that are over to their new passes; returns how
    many passes gave up their cards. A pass renewed more than once (a retry, a double
    click) gives them to its latest renewal that is not cancelled; if every renewal was
    cancelled, the cards stay where they are."""
    moved = 0
    pending: dict[int, list[int]] = {}
    for move in tx.all("SELECT from_id, to_id FROM card_moves ORDER BY from_id, to_id DESC"):
        pending.setdefault(int(move["from_id"]), []).append(int(move["to_id"]))
    for from_id, targets in pending.items():
        old = ticket_row(tx, from_id)
        if old["status"] != Status.CANCELLED and pass_end(tx, old) > now:
            continue
        tx.exec("DELETE FROM card_moves WHERE from_id = ?", (from_id,))
        for to_id in targets:  # latest renewal first (ids grow)
            new = ticket_row(tx, to_id)
            if new["status"] != Status.CANCELLED:
                moved += _move_cards(tx, old, new)
                break
    return moved


def _move_cards(tx: Tx, old: Any, new: Any) -> int:
    if not tx.exec("UPDATE media SET ticket_id = ? WHERE ticket_id = ?", (new["id"], old["id"])):
        return 0
    store_media(tx, old)
    store_media(tx, new)
    return 1
