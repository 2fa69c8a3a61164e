"""Wire and in-process types of the edge node.

Reasons, modes and directions live in ``sync.rules`` (the core replays the same rules)
and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import msgspec

from sync.rules import Direction, Mode, Reason, ScanState
from sync.snapshot import Date

__all__ = [
    "Decision",
    "Direction",
    "GateProfile",
    "GateView",
    "Mode",
    "Reason",
    "Result",
    "ScanAnswer",
    "ScanRequest",
    "ScanState",
    "TicketInfo",
]


class Result(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Decision(msgspec.Struct, frozen=True, gc=False):
    """What ``decide`` returns: a refusal is a value, never an exception."""

    result: Result
    reason: Reason
    direction: Direction
    new_state: ScanState | None
    """The state to store; None when the scan changes nothing."""
    date: int = 0
    """The date the scan was decided for (0 when none applied)."""


class GateProfile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of ``PUT /api/v1/gates/{gate}``: what a gate admits, and how."""

    mode: Mode
    dates: list[int] | None = None
    events: list[int] | None = None
    zones: list[int] | None = None


@dataclass(frozen=True, slots=True)
class GateView:
    """A gate profile resolved against the catalogue, ready for ``decide``.

    ``dates`` holds every date the gate admits; ``zones`` empty admits every zone.
    """

    name: str
    mode: Mode
    dates: dict[int, Date]
    zones: frozenset[int]


class ScanRequest(msgspec.Struct, frozen=True):
    scan_id: str
    code: str
    gate: str
    direction: Direction = Direction.AUTO
    scanned_at: float | None = None
    """Device time (POSIX seconds) of a scan taken offline; the node's clock otherwise."""


class TicketInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    id: int
    kind: str
    event: int
    date: int
    zone: int
    holder: str = ""
    order: str = ""


class ScanAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    scan_id: str
    result: Result
    reason: Reason
    message: str
    direction: Direction
    ticket: TicketInfo | None = None
    entries: int | None = None
