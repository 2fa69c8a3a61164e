"""Issuing keys: Ed25519 key pairs with small integer ids; the private halves stay here.

One key is active and signs every new code, and every answer the edge routes give
(``sync.codes.sign_feed``: the active key, then the newest unrevoked others). Rotation
adds a new active key; older keys keep verifying at the gates. Revocation marks a key
so the gates answer ``forged`` for its codes; with ``reissue`` the valid tickets and
passes it signed get new codes from the active key (their holders need the new code).
The active key cannot be revoked before a rotation. Every key change reaches every
venue as a catalog change.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core import feed
from core.errors import Conflict, NotFound
from sync.codes import (
    FEED_DOMAIN,
    MAX_FEED_SIGNATURES,
    Claims,
    Kind,
    code_digest,
    sign,
    sign_feed_all,
)

if TYPE_CHECKING:
    from core.store import Tx

MAX_KEY_ID: Final = 0xFFFF


class Signer:
    """The active key, ready to sign claims for one transaction."""

    __slots__ = ("_private", "key_id")

    def __init__(self, key_id: int, private: Ed25519PrivateKey) -> None:
        self.key_id = key_id
        self._private = private

    def code(self, kind: Kind, ident: int, event: int, date: int, zone: int) -> str:
        return sign(Claims(self.key_id, kind, ident, event, date, zone), self._private)


class FeedSigner:
    """Signs response bodies for the edge: the active key first, then the newest keys
    that are not revoked, so a node that missed a rotation still verifies."""

    __slots__ = ("_keys",)

    def __init__(self, keys: list[tuple[int, Ed25519PrivateKey]]) -> None:
        self._keys = keys

    @property
    def key_ids(self) -> list[int]:
        return [kid for kid, _key in self._keys]

    def header(self, body: bytes, domain: bytes = FEED_DOMAIN) -> str:
        """The ``X-Gatekeeper-Signature`` value for *body*."""
        return sign_feed_all(body, self._keys, domain=domain)


def feed_signer(tx: Tx) -> FeedSigner:
    rows = tx.all(
        "SELECT id, private FROM keys WHERE revoked_at IS NULL ORDER BY active DESC, id DESC"
        " LIMIT ?",
        (MAX_FEED_SIGNATURES,),
    )
    return FeedSigner(
        [(int(r["id"]), Ed25519PrivateKey.from_private_bytes(r["private"])) for r in rows]
    )


def ensure_key(tx: Tx) -> int:
    """Create the first key if there is none; return the active key id."""
    active = tx.scalar("SELECT id FROM keys WHERE active = 1")
    if active is not None:
        return int(active)
    return _new_key(tx)


def signer(tx: Tx) -> Signer:
    row = tx.one("SELECT id, private FROM keys WHERE active = 1")
    if row is None:
        ensure_key(tx)
        row = tx.one("SELECT id, private FROM keys WHERE active = 1")
        assert row is not None
    return Signer(int(row["id"]), Ed25519PrivateKey.from_private_bytes(row["private"]))


def list_keys(tx: Tx) -> list[dict[str, object]]:
    return [
        {
            "id": r["id"],
            "public": bytes(r["public"]).hex(),
            "active": bool(r["active"]),
            "revoked": r["revoked_at"] is not None,
        }
        for r in tx.all("SELECT id, public, active, revoked_at FROM keys ORDER BY id")
    ]


def rotate(tx: Tx) -> int:
    """Make a new key the active one; the old ones keep verifying."""
    key_id = _new_key(tx)
    feed.catalog_changed_everywhere(tx)
    return key_id


def revoke(tx: Tx, key_id: int, reissue: bool) -> int:
    """Revoke *key_id*; return how many codes were re-signed."""
    row = tx.one("SELECT active, revoked_at FROM keys WHERE id = ?", (key_id,))
    if row is None:
        raise NotFound("key_not_found", f"no key {key_id}")
    if row["active"]:
        raise Conflict("key_active", "rotate to a new key before revoking the active one")
    if row["revoked_at"] is not None:
        return 0
    now = time.time()
    tx.exec("UPDATE keys SET revoked_at = ? WHERE id = ?", (now, key_id))
    reissued = 0
    if reissue:
        active = signer(tx)
        rows = tx.all(
            "SELECT id, kind, event_id, date_id, zone_id, venue_id FROM tickets"
            " WHERE key_id = ? AND status != 1",
            (key_id,),
        )
        for r in rows:
            code = active.code(Kind(r["kind"]), r["id"], r["event_id"], r["date_id"], r["zone_id"])
            tx.exec(
                "UPDATE tickets SET code = ?, digest = ?, key_id = ? WHERE id = ?",
                (code, code_digest(code), active.key_id, r["id"]),
            )
            feed.record_changed(tx, r["venue_id"], r["id"])
        reissued = len(rows)
    feed.catalog_changed_everywhere(tx)
    return reissued


def _new_key(tx: Tx) -> int:
    key_id = tx.next_id("keys")
    if key_id > MAX_KEY_ID:
        raise Conflict("keys_exhausted", "no key id left")
    private = Ed25519PrivateKey.generate()
    raw_private = private.private_bytes_raw()
    raw_public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    tx.exec("UPDATE keys SET active = 0 WHERE active = 1")
    tx.exec(
        "INSERT INTO keys (id, private, public, active, created_at) VALUES (?, ?, ?, 1, ?)",
        (key_id, raw_private, raw_public, time.time()),
    )
    return key_id
