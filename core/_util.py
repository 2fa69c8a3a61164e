"""Small helpers shared by the core's domain modules: money, time, rows."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import BadRequest

MAX_PRICE: Final = Decimal("1000000")
CENT: Final = Decimal("0.01")


def money(value: Decimal, field: str = "price") -> Decimal:
    """A non-negative amount with at most two decimals, normalized to cents."""
    try:
        if not value.is_finite() or value < 0 or value > MAX_PRICE:
            raise BadRequest("bad_price", f"{field} must be between 0 and {MAX_PRICE}")
        quantized = value.quantize(CENT)
    except InvalidOperation as exc:
        raise BadRequest("bad_price", f"{field} is not a valid amount") from exc
    if quantized != value:
        raise BadRequest("bad_price", f"{field} has more than two decimals")
    return quantized


def posix(moment: datetime) -> float:
    return moment.timestamp()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat()


def zone_info(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadRequest("bad_timezone", f"unknown timezone {name!r}") from exc


def local_day(ts: float, tz: ZoneInfo) -> int:
    """Proleptic ordinal of the local calendar day at *ts* (per-day pass limits)."""
    return datetime.fromtimestamp(ts, tz).date().toordinal()
