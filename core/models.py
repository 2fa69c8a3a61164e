"""Request and answer bodies of the core's HTTP API (msgspec Structs).

Requests refuse unknown fields (a typo in a box-office script should fail loudly, not be
ignored); answers may gain fields. Money is ``Decimal`` and travels as a string. Times
come in as ISO-8601 with a timezone and go out as ISO-8601 in UTC.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Final, Literal

import msgspec

MAX_ITEM_QUANTITY: Final = 500
MAX_ORDER_ITEMS: Final = 100
MAX_STOCK_QUANTITY: Final = 5000
MAX_CANCEL_TICKETS: Final = 5000
MAX_CATALOG_ITEMS: Final = 500
MAX_CAPACITY: Final = 10_000_000
MAX_ID: Final = 2**32 - 1

Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
OptText = Annotated[str, msgspec.Meta(max_length=200)]
Time = Annotated[datetime, msgspec.Meta(tz=True)]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=MAX_ITEM_QUANTITY)]
TicketIds = Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_CANCEL_TICKETS)]
Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z]{3}$")]

Payment = Literal["card", "invoice", "free", "cash"]
SaleChannel = Literal["online", "box_office", "reseller"]
StockChannel = Literal["box_office", "reseller"]
RefundMethod = Literal["original", "card", "cash", "bank_transfer", "voucher", "none"]


class DateIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    start: Time
    end: Time
    doors_open: Time | None = None


class ZoneIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Text
    capacity: Annotated[int, msgspec.Meta(ge=0, le=MAX_CAPACITY)]


class RateIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Text
    price: Decimal


class EventIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Text
    venue: Text
    dates: Annotated[list[DateIn], msgspec.Meta(min_length=1, max_length=MAX_CATALOG_ITEMS)]
    zones: Annotated[list[ZoneIn], msgspec.Meta(min_length=1, max_length=MAX_CATALOG_ITEMS)]
    rates: Annotated[list[RateIn], msgspec.Meta(min_length=1, max_length=MAX_CATALOG_ITEMS)]
    currency: Currency = "CHF"
    timezone: OptText = ""
    """IANA zone of the venue (only when the venue is new); days are counted in it."""


class DatePatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    start: Time | None = None
    end: Time | None = None
    doors_open: Time | None = None


class CustomerIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Text
    email: OptText = ""


class ItemIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A ticket line ``{date, zone, rate, quantity}`` or a pass line ``{pass, quantity,
    choices?}`` (choices: one date id per chosen event, event-choice passes only)."""

    quantity: Quantity = 1
    date: Id | None = None
    zone: Id | None = None
    rate: Id | None = None
    pass_: Id | None = msgspec.field(default=None, name="pass")
    choices: Annotated[list[Id], msgspec.Meta(max_length=MAX_CATALOG_ITEMS)] | None = None


class OrderIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    customer: CustomerIn
    payment: Payment
    channel: SaleChannel
    items: Annotated[list[ItemIn], msgspec.Meta(min_length=1, max_length=MAX_ORDER_ITEMS)]


class PayIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reference: OptText = ""


class CancelIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tickets: TicketIds | None = None
    reason: OptText = ""
    refund: RefundMethod = "original"


class PassEventIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    event: Id
    price: Decimal | None = None
    """Price of this event in an event-choice pass."""


class PassProductIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Text
    venue: Text
    events: Annotated[list[PassEventIn], msgspec.Meta(min_length=1, max_length=MAX_CATALOG_ITEMS)]
    price: Decimal = Decimal(0)
    currency: Currency = "CHF"
    choice: bool = False
    max_entries: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 0
    per_event: bool = False
    per_day: bool = False
    one_day: bool = False
    quota: Annotated[int, msgspec.Meta(ge=0, le=MAX_CAPACITY)] = 0
    """Passes that may be sold; 0 = no limit."""


class PassUpdateIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    event: Id
    price: Decimal | None = None
    date: Id | None = None
    """Event-choice passes: the date every sold pass gets for the new event (defaults
    to the event's only date, if it has one)."""


class RenewIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    product: Id
    payment: Payment = "card"
    channel: SaleChannel = "box_office"
    choices: Annotated[list[Id], msgspec.Meta(max_length=MAX_CATALOG_ITEMS)] | None = None


class MediaIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    uid: Annotated[str, msgspec.Meta(min_length=4, max_length=64, pattern="^[0-9A-Za-z:-]+$")]


class StockIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    date: Id
    zone: Id
    rate: Id
    quantity: Annotated[int, msgspec.Meta(ge=1, le=MAX_STOCK_QUANTITY)]
    channel: StockChannel = "box_office"


class StockSellIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    tickets: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_STOCK_QUANTITY)]
    customer: CustomerIn
    payment: Payment = "cash"


class QuickCancelIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ResellerImportIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    date: Id
    zone: Id
    rate: Id
    csv: Annotated[str, msgspec.Meta(min_length=1, max_length=8 * 1024 * 1024)]
    reseller: Text = "reseller"


class TokenIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: OptText = ""


class RevokeIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reissue: bool = True
    """Re-sign the valid tickets and passes the revoked key signed, with the active key."""


# Answers ----------------------------------------------------------------------------


class TicketOut(msgspec.Struct, frozen=True):
    id: int
    kind: Literal["ticket", "pass"]
    status: Literal["valid", "unpaid", "cancelled"]
    code: str
    event: int
    """Event id (ticket) or pass product id (pass)."""
    date: int
    zone: int
    rate: int | None
    price: Decimal
    channel: SaleChannel
    sold: bool
    order: str
    holder: str
    media: list[str]
    dates: list[int]
    key_id: int
    cancelled_at: str | None = None
    cancel_reason: str | None = None
    refund_method: str | None = None


class OrderOut(msgspec.Struct, frozen=True):
    number: str
    status: Literal["paid", "pending", "cancelled"]
    payment: Payment
    channel: SaleChannel
    customer: CustomerIn
    total: Decimal
    currency: str
    created_at: str
    paid_at: str | None
    cancelled_at: str | None
    reminders_sent: int
    due_at: str | None
    """Invoice orders awaiting payment: when they are cancelled if still unpaid."""
    tickets: list[TicketOut]
    refunded: Decimal = Decimal(0)
