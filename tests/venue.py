"""A small, fully known venue for tests: dates open now, past and future; every kind of
record; a real Ed25519 key. Times are relative to the moment the venue is built."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sync.codes import Claims, Kind, code_digest, sign
from sync.snapshot import (
    Catalog,
    Channel,
    Date,
    Event,
    Header,
    PassProduct,
    PublicKey,
    Record,
    Status,
    Zone,
    write_snapshot,
)

HOUR = 3600.0


@dataclass
class Venue:
    key: Ed25519PrivateKey
    key_id: int
    now: float
    catalog: Catalog
    records: list[Record] = field(default_factory=list)
    codes: dict[str, str] = field(default_factory=dict)
    """name -> code text"""
    ids: dict[str, int] = field(default_factory=dict)
    next_id: int = 1

    def public_raw(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def signed(self, kind: Kind, ident: int, event: int, date: int, zone: int) -> str:
        return sign(Claims(self.key_id, kind, ident, event, date, zone), self.key)

    def add_key(self, key_id: int, *, revoked: bool = False) -> Ed25519PrivateKey:
        """Another issuing key, published in the catalogue (possibly as revoked)."""
        key = Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.catalog = msgspec.structs.replace(
            self.catalog, keys=[*self.catalog.keys, PublicKey(key_id, public, revoked)]
        )
        return key

    def date(self, ident: int) -> Date:
        return next(d for d in self.catalog.dates if d.id == ident)

    def add_ticket(self, name: str, date: int = 10, zone: int = 100, *,
                   status: Status = Status.VALID, channel: Channel = Channel.ONLINE,
                   sold: bool = True, holder: str = "", order: str = "",
                   media: tuple[str, ...] = (), plain: str | None = None,
                   signer: tuple[int, Ed25519PrivateKey] | None = None) -> str:
        ident = self.next_id
        self.next_id += 1
        event = next(d.event for d in self.catalog.dates if d.id == date)
        if plain is not None:
            code = plain
        elif signer is not None:
            code = sign(Claims(signer[0], Kind.TICKET, ident, event, date, zone), signer[1])
        else:
            code = self.signed(Kind.TICKET, ident, event, date, zone)
        self.records.append(Record(ident, Kind.TICKET, status, event, date, zone,
                                   code_digest(code), channel, sold, order, holder, media))
        self.codes[name] = code
        self.ids[name] = ident
        return code

    def add_pass(self, name: str, product: int, *, dates: tuple[int, ...] = (),
                 status: Status = Status.VALID, media: tuple[str, ...] = ()) -> str:
        ident = self.next_id
        self.next_id += 1
        code = self.signed(Kind.PASS, ident, product, 0, 0)
        self.records.append(Record(ident, Kind.PASS, status, product, 0, 0, code_digest(code),
                                   Channel.ONLINE, True, "", "", media, dates))
        self.codes[name] = code
        self.ids[name] = ident
        return code

    def unsynced(self, date: int = 10, zone: int = 100) -> str:
        """A validly signed ticket code that is not in the snapshot (sold after sync)."""
        ident = 900_000 + self.next_id
        self.next_id += 1
        event = next(d.event for d in self.catalog.dates if d.id == date)
        return self.signed(Kind.TICKET, ident, event, date, zone)

    def write(self, path: Path, cursor: int = 0) -> Path:
        with path.open("wb") as fh:
            write_snapshot(fh, Header(self.catalog.venue, cursor, self.now, len(self.records)),
                           self.catalog, self.records)
        return path


def make_venue(now: float | None = None) -> Venue:
    """Event 1 (dates 10 open now, 11 tomorrow, 12 yesterday), event 2 (date 20 open now,
    same day as 10), event 3 (date 30 open now); zones 100, 101 (event 1), 200; passes."""
    now = time.time() if now is None else now
    key = Ed25519PrivateKey.generate()
    day = 24 * HOUR

    def date(ident: int, event: int, offset: float) -> Date:
        start = now + offset
        return Date(ident, event, start, start + 3 * HOUR, start - 2 * HOUR,
                    int(start // day) + 719163)

    dates = [
        date(10, 1, HOUR), date(11, 1, day + HOUR), date(12, 1, -day),
        date(20, 2, HOUR), date(30, 3, HOUR),
    ]
    venue_catalog = Catalog(
        venue="Arena",
        events=[Event(1, "Concert"), Event(2, "Play"), Event(3, "Match")],
        dates=dates,
        zones=[Zone(100, 1, "Floor", 1000), Zone(101, 1, "Balcony", 100),
               Zone(200, 2, "Hall", 500), Zone(300, 3, "Stand", 500)],
        products=[
            PassProduct(500, "Season", events=(1, 2, 3)),
            PassProduct(501, "Three shows", events=(1, 2, 3), max_entries=1),
            PassProduct(502, "One per event", events=(1, 2, 3), per_event=True),
            PassProduct(503, "One event per day", events=(1, 2, 3), per_day=True),
            PassProduct(504, "Choice", events=(1, 2, 3), choice=True),
            PassProduct(505, "One day", events=(1, 2, 3), one_day=True),
        ],
        keys=[],
    )
    venue = Venue(key, 1, now, venue_catalog)
    keys = [PublicKey(1, venue.public_raw())]
    venue.catalog = Catalog(venue_catalog.venue, venue_catalog.events, venue_catalog.dates,
                            venue_catalog.zones, venue_catalog.products, keys)
    return venue
