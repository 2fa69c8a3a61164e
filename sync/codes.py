"""Signed ticket codes: a versioned, compact, Ed25519-signed envelope.

Text form::

    GK1<base32 of (payload || signature)>      (RFC 4648 alphabet, no padding)

``GK`` marks our codes, ``1`` is the envelope version. Only upper-case letters and
digits appear, so the code suits QR alphanumeric mode and a keyboard-wedge laser
scanner types it the same on every keyboard layout. Version 1 is 139 characters.

Payload (big-endian, ``PAYLOAD_V1``, 21 bytes)::

    key_id  u16   issuing key; the verifier looks the public key up by this id
    kind    u8    0 ticket, 1 pass
    id      u64   ticket or pass id
    event   u32   event id (ticket) or pass product id (pass)
    date    u32   date id (ticket); 0 for a pass
    zone    u16   zone id; 0 means any zone

The signature covers ``b"GK1" + payload`` so a payload can never be replayed under
another envelope version. ``parse`` never raises and rejects anything that is not a
well-formed envelope before any cryptography runs. ``verify`` treats an unknown key
and a revoked key the same way: ``forged``. Only ``sign`` needs a private key, and
only the core calls it.

Plain barcodes (third-party resellers) and media ids (RFID card UIDs) are not signed:
they authenticate only by being in the index, which stores ``code_digest`` of every
code it knows.

Signed responses (the feed, and what else the core tells a node): the core signs
``domain + body`` (the exact response bytes) with its issuing keys and sends::

    X-Gatekeeper-Signature: <key_id>:<base64 signature>[, <key_id>:<base64 signature>...]

The first signature is by the active key; the others by the newest keys that are not
revoked (at most ``MAX_FEED_SIGNATURES`` in all), so a node that has not yet seen a key
rotation still verifies the batch that announces the new key. ``verify_feed`` is true
when any listed signature checks out under a known, unrevoked key. The domains keep a
signed body from being replayed as another kind of answer, and keep all of them apart
from ticket codes (``b"GK1" + payload``): ``FEED_DOMAIN`` for the change feed and the
catalogue, ``SNAPSHOT_DOMAIN`` for a snapshot's digest, ``ACK_DOMAIN`` for scan-upload
and quick-cancel answers; each answer to a node is signed under its domain bound to the
request it answers (``request_domain``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Final

import msgspec
from cryptography.exceptions import InvalidSignature

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

PREFIX: Final = "GK"
VERSION_1: Final = "1"
ENVELOPE_V1: Final = PREFIX + VERSION_1
PAYLOAD_V1: Final = struct.Struct(">HBQIIH")
SIGNATURE_BYTES: Final = 64
RAW_V1_BYTES: Final = PAYLOAD_V1.size + SIGNATURE_BYTES
# base32 without padding: ceil(bits / 5) characters.
BODY_V1_CHARS: Final = (RAW_V1_BYTES * 8 + 4) // 5
CODE_V1_CHARS: Final = len(ENVELOPE_V1) + BODY_V1_CHARS
MAX_CODE_CHARS: Final = 200
"""Longest code text accepted anywhere (signed, plain or media id)."""

FEED_DOMAIN: Final = b"GKFEED1"
SNAPSHOT_DOMAIN: Final = b"GKSNAP1"
ACK_DOMAIN: Final = b"GKACK1"
SIGNATURE_HEADER: Final = "X-Gatekeeper-Signature"
MAX_FEED_SIGNATURES: Final = 4
"""Most signatures one signature header carries (and a verifier looks at)."""
MAX_SIGNATURE_HEADER_CHARS: Final = 1024
_B64_SIGNATURE_CHARS: Final = 88
_MAX_KEY_ID_DIGITS: Final = 5

_B32_ALPHABET: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
_B32_AS_DIGITS: Final = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "0123456789abcdefghijklmnopqrstuv"
)
"""RFC 4648 base32 letters to the digits of ``int(..., 32)``, same values in order."""


class Kind(IntEnum):
    TICKET = 0
    PASS = 1


@dataclass(frozen=True, slots=True)
class Claims:
    """What a signed code says, once its signature checks out (or before, unverified)."""

    key_id: int
    kind: Kind
    id: int
    event: int
    date: int
    zone: int


@dataclass(frozen=True, slots=True)
class ParsedCode:
    """A well-formed version-1 envelope; its signature is not checked yet."""

    claims: Claims
    signed: bytes
    signature: bytes


class ParseError(IntEnum):
    """Why ``parse`` refused a text: every value maps to the ``malformed`` reason."""

    NOT_SIGNED = 0
    """No ``GK1`` prefix: not our signed code (may be a plain code or media id)."""
    BAD_LENGTH = 1
    BAD_ALPHABET = 2
    BAD_PAYLOAD = 3


def is_signed_text(text: str) -> bool:
    """True when *text* claims to be a signed code (it carries our envelope prefix)."""
    return text.startswith(PREFIX) and len(text) > len(PREFIX) and text[len(PREFIX)].isdigit()


def parse(text: str) -> ParsedCode | ParseError:
    """Parse a signed code's text. Never raises; checks length and alphabet first."""
    if not text.startswith(ENVELOPE_V1):
        return ParseError.NOT_SIGNED
    if len(text) != CODE_V1_CHARS:
        return ParseError.BAD_LENGTH
    body = text[len(ENVELOPE_V1) :]
    if not _B32_ALPHABET.issuperset(body):
        return ParseError.BAD_ALPHABET
    raw = _b32_canonical(body, RAW_V1_BYTES)
    if raw is None:
        return ParseError.BAD_ALPHABET
    payload = raw[: PAYLOAD_V1.size]
    key_id, kind, ident, event, date, zone = PAYLOAD_V1.unpack(payload)
    if kind not in (Kind.TICKET, Kind.PASS) or ident == 0:
        return ParseError.BAD_PAYLOAD
    claims = Claims(key_id, Kind(kind), ident, event, date, zone)
    return ParsedCode(claims, ENVELOPE_V1.encode() + payload, raw[PAYLOAD_V1.size :])


def _b32_canonical(body: str, size: int) -> bytes | None:
    """*size* bytes from unpadded base32 *body* (alphabet already checked), or None when
    its length does not fit or its trailing padding bits are not zero: two texts must
    never decode to the same bytes, or a digest lookup could be sidestepped. Integer
    parsing in C: ``base64.b32decode`` is pure Python and cost 30 us per code."""
    spare = len(body) * 5 - size * 8
    if not 0 <= spare < 5:
        return None
    if not body:
        return b""
    value = int(body.translate(_B32_AS_DIGITS), 32)
    if value & ((1 << spare) - 1):
        return None
    return (value >> spare).to_bytes(size, "big")


def encode_raw(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def sign(claims: Claims, private_key: Ed25519PrivateKey) -> str:
    """Issue a code. Only the core holds private keys."""
    payload = PAYLOAD_V1.pack(
        claims.key_id, int(claims.kind), claims.id, claims.event, claims.date, claims.zone
    )
    signature = private_key.sign(ENVELOPE_V1.encode() + payload)
    return ENVELOPE_V1 + encode_raw(payload + signature)


class KeyRing:
    """Public keys by key id, and the ids that were revoked. Holds no private key."""

    __slots__ = ("_keys", "_revoked")

    def __init__(
        self,
        keys: dict[int, Ed25519PublicKey] | None = None,
        revoked: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        self._keys: dict[int, Ed25519PublicKey] = dict(keys or {})
        self._revoked: set[int] = set(revoked)

    @classmethod
    def from_raw(cls, keys: dict[int, bytes], revoked: set[int] | frozenset[int]) -> KeyRing:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        loaded = {kid: Ed25519PublicKey.from_public_bytes(raw) for kid, raw in keys.items()}
        return cls(loaded, revoked)

    def usable(self, key_id: int) -> Ed25519PublicKey | None:
        if key_id in self._revoked:
            return None
        return self._keys.get(key_id)

    def is_revoked(self, key_id: int) -> bool:
        return key_id in self._revoked

    def __len__(self) -> int:
        return len(self._keys)


def verify(parsed: ParsedCode, keyring: KeyRing) -> bool:
    """True when the signature is valid under a known, unrevoked key."""
    key = keyring.usable(parsed.claims.key_id)
    if key is None:
        return False
    try:
        key.verify(parsed.signature, parsed.signed)
    except InvalidSignature:
        return False
    return True


def code_digest(text: str) -> bytes:
    """Index key of a code's exact text (signed, plain or media id)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def normalize(text: str) -> str:
    """What scanners add around a code: surrounding whitespace, and line endings."""
    return text.strip()


def sign_feed(
    body: bytes, key_id: int, private_key: Ed25519PrivateKey, *, domain: bytes = FEED_DOMAIN
) -> str:
    """One ``<key_id>:<base64 signature>`` of ``domain + body``. Only the core signs."""
    signature = private_key.sign(domain + body)
    return f"{key_id}:{base64.b64encode(signature).decode('ascii')}"


def sign_feed_all(
    body: bytes,
    keys: Iterable[tuple[int, Ed25519PrivateKey]],
    *,
    domain: bytes = FEED_DOMAIN,
) -> str:
    """The header value: one signature per key (active first), comma-separated."""
    return ", ".join(sign_feed(body, kid, key, domain=domain) for kid, key in keys)


def request_domain(domain: bytes, route: str, venue: str, *numbers: int) -> bytes:
    """*domain* bound to one request of a node: the route it asked (``changes``,
    ``admissions``, ...), its venue and its numeric parameters (``after``, ``upto``,
    ``cursor``), in a self-delimiting encoding. The core signs each answer under the
    domain of the request it answers and the node verifies under the domain of the
    request it made, so a signed answer taken to another request does not verify: a
    middleman who rewrites ``after=3`` into ``after=4`` gets a genuine batch that
    would have made the node skip change 4 for good."""
    return domain + msgspec.msgpack.encode((route, venue, *numbers))


def verify_feed(
    body: bytes, header_value: str, keyring: KeyRing, *, domain: bytes = FEED_DOMAIN
) -> bool:
    """True when a signature in *header_value* covers ``domain + body`` under a known,
    unrevoked key of *keyring*. Never raises; anything malformed is simply not verified."""
    if not header_value or len(header_value) > MAX_SIGNATURE_HEADER_CHARS:
        return False
    message = domain + body
    for part in header_value.split(",")[:MAX_FEED_SIGNATURES]:
        key_text, sep, sig_text = part.strip().partition(":")
        if (
            not sep
            or not key_text.isascii()
            or not key_text.isdigit()
            or len(key_text) > _MAX_KEY_ID_DIGITS
            or len(sig_text) != _B64_SIGNATURE_CHARS
        ):
            continue
        key = keyring.usable(int(key_text))
        if key is None:
            continue
        try:
            signature = base64.b64decode(sig_text, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(signature) != SIGNATURE_BYTES:
            continue
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False
