"""Venue-scoped node tokens: what an edge node presents to sync with the core.

Only a SHA-256 digest of each token is stored; the token is shown once, at creation.
A node token opens its venue's snapshot, changes, scan upload and quick cancel, and
nothing else.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import TYPE_CHECKING, Final

from core import feed

if TYPE_CHECKING:
    from core.store import Tx

TOKEN_BYTES: Final = 32
TOKEN_PREFIX: Final = "gkn_"


def create(tx: Tx, venue: str, name: str) -> str:
    venue_id = feed.ensure_venue(tx, venue)
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    tx.exec(
        "INSERT INTO node_tokens (digest, venue_id, name, created_at) VALUES (?, ?, ?, ?)",
        (digest(token), venue_id, name, time.time()),
    )
    return token


def venue_of(tx: Tx, token: str) -> str | None:
    """The venue name a node token opens, or None."""
    found = tx.scalar(
        "SELECT v.name FROM node_tokens t JOIN venues v ON v.id = t.venue_id WHERE t.digest = ?",
        (digest(token),),
    )
    return None if found is None else str(found)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
