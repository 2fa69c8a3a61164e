"""The admission rules, once, for the edge's decision and the core's reconciliation.

``step`` applies one scan to a ticket's (or pass's) scan state once the record has been
found valid for the date and zone. It decides only what depends on earlier scans:

1. direction: ``auto`` is an exit when the holder is inside for this date (entry_exit
   mode), an entry otherwise. Modes other than entry_exit track no presence: an exit
   there is recorded as ``exit_ok`` and changes nothing.
2. exit: ``not_inside`` unless inside, then ``exit_ok``.
3. entry, mode rules: ``single`` refuses a date already admitted (``already_used``);
   ``entry_exit`` refuses an entry while inside for this date (``already_inside``);
   ``multi`` admits again.
4. entry to a date not admitted before, pass limits: ``entries_exhausted`` when the
   pass has been used on ``max_entries`` dates; ``limit_reached`` for one date per
   event, one event per day, or all entries on one single day.

Presence is per date: someone who never scanned out yesterday is not "inside" today.
``merge`` applies another node's admitted scan, which may arrive late and out of order.
Pure: no I/O, no clock; ``at`` is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import msgspec


class Reason(StrEnum):
    """Every answer's reason; the values are the public, stable codes."""

    OK = "ok"
    EXIT_OK = "exit_ok"
    MALFORMED = "malformed"
    FORGED = "forged"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    UNPAID = "unpaid"
    WRONG_DATE = "wrong_date"
    WRONG_ZONE = "wrong_zone"
    TOO_EARLY = "too_early"
    TOO_LATE = "too_late"
    ALREADY_USED = "already_used"
    ALREADY_INSIDE = "already_inside"
    NOT_INSIDE = "not_inside"
    ENTRIES_EXHAUSTED = "entries_exhausted"
    LIMIT_REACHED = "limit_reached"


ADMITTING = frozenset({Reason.OK, Reason.EXIT_OK})
"""Reasons whose result is ``accepted``."""


class Mode(StrEnum):
    SINGLE = "single"
    ENTRY_EXIT = "entry_exit"
    MULTI = "multi"


class Direction(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"
    AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Limits:
    """Pass limits; 0 / False means no limit."""

    max_entries: int = 0
    per_event: bool = False
    per_day: bool = False
    one_day: bool = False


NO_LIMITS = Limits()


class ScanState(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Per ticket: what earlier admitted scans leave behind (stored in the edge index)."""

    inside: int = 0
    """Date id the holder is inside for (entry_exit), 0 when outside."""
    entries: int = 0
    """Admissions (entries) counted, re-entries included."""
    admitted: tuple[tuple[int, int, int], ...] = ()
    """Distinct (date, event, day) the holder was admitted on, oldest first."""
    last_at: float = 0.0
    """The latest time an admitted scan had (it never goes back: an offline scan older
    than the last one leaves it): what ``merge`` judges other nodes' scans by."""


EMPTY_STATE = ScanState()


def entry_if_auto(direction: Direction) -> Direction:
    """The direction of a scan refused before any date applies: ``auto`` counts as entry."""
    return Direction.ENTRY if direction == Direction.AUTO else direction


def resolve_direction(state: ScanState, mode: Mode, direction: Direction, date: int) -> Direction:
    if direction == Direction.AUTO:
        if mode == Mode.ENTRY_EXIT and state.inside == date and date:
            return Direction.EXIT
        return Direction.ENTRY
    return direction


def step(
    state: ScanState,
    mode: Mode,
    direction: Direction,
    date: int,
    event: int,
    day: int,
    limits: Limits,
    at: float,
) -> tuple[Reason, Direction, ScanState]:
    """Apply one scan to *state*. *direction* must already be resolved (not ``auto``)."""
    if direction == Direction.EXIT:
        if mode != Mode.ENTRY_EXIT:
            return Reason.EXIT_OK, direction, state
        if not state.inside:
            return Reason.NOT_INSIDE, direction, state
        return (
            Reason.EXIT_OK,
            direction,
            ScanState(0, state.entries, state.admitted, max(at, state.last_at)),
        )
    admitted = state.admitted
    seen = False
    for item in admitted:
        if item[0] == date:
            seen = True
            break
    if mode == Mode.SINGLE:
        if seen:
            return Reason.ALREADY_USED, direction, state
    elif mode == Mode.ENTRY_EXIT and state.inside == date:
        return Reason.ALREADY_INSIDE, direction, state
    if not seen:
        if limits is not NO_LIMITS:
            refused = _limit(admitted, event, day, limits)
            if refused is not None:
                return refused, direction, state
        admitted = (*admitted, (date, event, day))
    inside = date if mode == Mode.ENTRY_EXIT else 0
    return (
        Reason.OK,
        direction,
        ScanState(inside, state.entries + 1, admitted, max(at, state.last_at)),
    )


def _limit(
    admitted: tuple[tuple[int, int, int], ...], event: int, day: int, limits: Limits
) -> Reason | None:
    if limits.max_entries and len(admitted) >= limits.max_entries:
        return Reason.ENTRIES_EXHAUSTED
    for _date, ev, d in admitted:
        if limits.per_event and ev == event:
            return Reason.LIMIT_REACHED
        if limits.per_day and d == day:
            return Reason.LIMIT_REACHED
        if limits.one_day and d != day:
            return Reason.LIMIT_REACHED
    return None


MERGE_SKEW_S: Final = 30.0
"""How much older than what a state saw another node's scan must be before ``merge``
judges it by time: closer than that, two nodes' clocks cannot be trusted to order them,
and the scan applies in the order it came, as a local one."""


def merge(
    state: ScanState,
    mode: Mode,
    direction: Direction,
    date: int,
    event: int,
    day: int,
    limits: Limits,
    at: float,
) -> ScanState:
    """*state* after another node's admitted scan (the change feed), or *state* itself
    when the scan changes nothing here. *at* is when that node logged it, on its clock
    (never a handheld's: ``ScanItem.logged_at``). *direction* must already be resolved.

    Scans from other nodes come late: a node that was cut off uploads an hour of them,
    a core restored from a backup gets them all again. One more than ``MERGE_SKEW_S``
    older than what *state* already reflects (``state.last_at``) counts as ``step``
    counts it (an entry it admits, its date), but cannot move presence: an exit at 20:00
    uploaded late must not put outside a holder who came back in at 20:05, nor an entry
    at 20:00 put inside one who left at 20:05. An entry ``step`` refuses (already inside
    for that date) changes nothing either way."""
    _reason, _direction, after = step(state, mode, direction, date, event, day, limits, at)
    if after is state or at >= state.last_at - MERGE_SKEW_S:
        return after
    if after.entries == state.entries and after.admitted == state.admitted:
        return state
    return ScanState(state.inside, after.entries, after.admitted, state.last_at)
