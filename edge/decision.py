"""The scan decision: one pure function, no I/O, no clock, no lock.

``decide(record, state, gate, now, direction, product)`` checks, in this order (the
order is part of the contract: the first failing check gives the reason):

1. ``cancelled`` (cancelled, refunded, or quick-cancelled stock), then ``unpaid``.
2. ``wrong_date``: a ticket whose date the gate does not admit; a pass that covers none
   of the gate's dates.
3. ``wrong_zone``: the gate admits some zones and the record's zone is not one of them
   (zone 0 on a record means any zone).
4. ``too_early`` / ``too_late``: an entry outside the date's window, doors open to end.
   A pass covering several of the gate's dates is decided for the date whose window is
   open now, else the date the holder is inside for (exit or auto), else the next one
   to open (``too_early``), else ``too_late``. Exits are not held to the window: nobody
   is kept inside after the end.
5. the mode rules and pass limits of ``sync.rules.step``.

``malformed``, ``forged`` and ``unknown`` are found before a record exists, by the
caller.
"""

from __future__ import annotations

from edge.model import Decision, GateView, Result
from sync.codes import Kind
from sync.rules import (
    NO_LIMITS,
    Direction,
    Limits,
    Reason,
    ScanState,
    entry_if_auto,
    resolve_direction,
    step,
)
from sync.snapshot import Date, PassProduct, Record, Status

_ACCEPTED = Result.ACCEPTED
_REJECTED = Result.REJECTED
_ENTRY = Direction.ENTRY
_EXIT = Direction.EXIT
_OK = Reason.OK
_EXIT_OK = Reason.EXIT_OK


def _refuse(reason: Reason, direction: Direction, date: int = 0) -> Decision:
    return Decision(_REJECTED, reason, direction, None, date)


def limits_of(product: PassProduct | None) -> Limits:
    if product is None or not (
        product.max_entries or product.per_event or product.per_day or product.one_day
    ):
        return NO_LIMITS
    return Limits(product.max_entries, product.per_event, product.per_day, product.one_day)


def covers(record: Record, product: PassProduct | None, date: Date) -> bool:
    """Whether a pass admits to *date* (its chosen dates, or its product's events)."""
    if date.id in record.dates:
        return True
    return product is not None and not product.choice and date.event in product.events


def _pass_date(
    record: Record,
    product: PassProduct | None,
    gate: GateView,
    now: float,
    state: ScanState,
    direction: Direction,
) -> Date | Reason:
    best_future: Date | None = None
    any_covered = False
    for date in gate.dates.values():
        if not covers(record, product, date):
            continue
        any_covered = True
        if date.doors_open <= now <= date.end:
            return date
        if now < date.doors_open and (
            best_future is None or date.doors_open < best_future.doors_open
        ):
            best_future = date
    if not any_covered:
        return Reason.WRONG_DATE
    if direction != _ENTRY and state.inside:
        # No window open now: an exit (or auto) of a holder still inside is for the date
        # they are inside for, which is not held to its window (as for a ticket).
        inside = gate.dates.get(state.inside)
        if inside is not None and covers(record, product, inside):
            return inside
    return best_future if best_future is not None else Reason.TOO_LATE


def decide(
    record: Record,
    state: ScanState,
    gate: GateView,
    now: float,
    direction: Direction,
    product: PassProduct | None = None,
) -> Decision:
    """Decide one scan of a known, authentic record. See the module docstring."""
    status = record.status
    if status:
        return _refuse(
            Reason.CANCELLED if status == Status.CANCELLED else Reason.UNPAID,
            entry_if_auto(direction),
        )
    if record.kind == Kind.TICKET:
        date = gate.dates.get(record.date)
        if date is None:
            return _refuse(Reason.WRONG_DATE, entry_if_auto(direction))
    else:
        found = _pass_date(record, product, gate, now, state, direction)
        if isinstance(found, Reason):
            return _refuse(found, entry_if_auto(direction))
        date = found
    date_id = date.id
    direction = resolve_direction(state, gate.mode, direction, date_id)
    if gate.zones and record.zone and record.zone not in gate.zones:
        return _refuse(Reason.WRONG_ZONE, direction, date_id)
    if direction == _ENTRY:
        if now < date.doors_open:
            return _refuse(Reason.TOO_EARLY, direction, date_id)
        if now > date.end:
            return _refuse(Reason.TOO_LATE, direction, date_id)
    limits = NO_LIMITS if record.kind == Kind.TICKET else limits_of(product)
    reason, direction, new_state = step(
        state, gate.mode, direction, date_id, date.event, date.day, limits, now
    )
    if reason is _OK or reason is _EXIT_OK:
        return Decision(_ACCEPTED, reason, direction, new_state, date_id)
    return _refuse(reason, direction, date_id)
