"""sync.codes: the signed code envelope. Parsing never raises; nothing but the exact
text signed by a known, unrevoked key verifies."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from sync.codes import (
    BODY_V1_CHARS,
    CODE_V1_CHARS,
    ENVELOPE_V1,
    PAYLOAD_V1,
    Claims,
    KeyRing,
    Kind,
    ParsedCode,
    ParseError,
    code_digest,
    is_signed_text,
    normalize,
    parse,
    sign,
    verify,
)

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
CLAIMS = Claims(1, Kind.TICKET, 123_456_789, 42, 7, 3)


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


RING = KeyRing.from_raw({1: raw(KEY)}, set())
CODE = sign(CLAIMS, KEY)


def accepted(text: str, ring: KeyRing = RING) -> bool:
    parsed = parse(text)
    return isinstance(parsed, ParsedCode) and verify(parsed, ring)


def test_round_trip():
    assert len(CODE) == CODE_V1_CHARS == 139
    assert CODE.startswith(ENVELOPE_V1)
    assert set(CODE[3:]) <= set(ALPHABET)
    parsed = parse(CODE)
    assert isinstance(parsed, ParsedCode)
    assert parsed.claims == CLAIMS
    assert verify(parsed, RING)
    assert is_signed_text(CODE)


@given(
    key_id=st.integers(0, 2**16 - 1),
    kind=st.sampled_from([Kind.TICKET, Kind.PASS]),
    ident=st.integers(1, 2**64 - 1),
    event=st.integers(0, 2**32 - 1),
    date=st.integers(0, 2**32 - 1),
    zone=st.integers(0, 2**16 - 1),
)
def test_round_trip_any_claims(key_id, kind, ident, event, date, zone):
    claims = Claims(key_id, kind, ident, event, date, zone)
    code = sign(claims, KEY)
    parsed = parse(code)
    assert isinstance(parsed, ParsedCode)
    assert parsed.claims == claims
    assert verify(parsed, KeyRing.from_raw({key_id: raw(KEY)}, set()))
    assert not verify(parsed, KeyRing.from_raw({key_id: raw(OTHER)}, set()))


def test_every_single_character_mutation_is_refused():
    refused = 0
    for pos in range(len(CODE)):
        for ch in ALPHABET + "0189a=-_ \x00é":
            if ch == CODE[pos]:
                continue
            mutated = CODE[:pos] + ch + CODE[pos + 1 :]
            assert not accepted(mutated), (pos, ch)
            refused += 1
    assert refused > 139 * 32


def test_every_deletion_and_insertion_is_refused():
    for pos in range(len(CODE)):
        shorter, longer = CODE[:pos] + CODE[pos + 1 :], CODE[:pos] + "A" + CODE[pos:]
        assert not accepted(shorter) and not accepted(longer)
        if pos >= len(ENVELOPE_V1):
            assert parse(shorter) == parse(longer) == ParseError.BAD_LENGTH


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", ParseError.NOT_SIGNED),
        ("hello", ParseError.NOT_SIGNED),
        ("GK", ParseError.NOT_SIGNED),
        ("GK2" + CODE[3:], ParseError.NOT_SIGNED),
        ("gk1" + CODE[3:], ParseError.NOT_SIGNED),
        (" " + CODE, ParseError.NOT_SIGNED),
        ("GK1", ParseError.BAD_LENGTH),
        (CODE[:-1], ParseError.BAD_LENGTH),
        (CODE[:100], ParseError.BAD_LENGTH),
        (CODE + "A", ParseError.BAD_LENGTH),
        (CODE + "=", ParseError.BAD_LENGTH),
        (CODE + "\n", ParseError.BAD_LENGTH),
        (CODE + CODE, ParseError.BAD_LENGTH),
        ("GK1" + "A" * 5000, ParseError.BAD_LENGTH),
        ("GK1" + CODE[3:].lower(), ParseError.BAD_ALPHABET),
        (CODE[:-1] + "a", ParseError.BAD_ALPHABET),
        (CODE[:10] + "0" + CODE[11:], ParseError.BAD_ALPHABET),
        (CODE[:10] + "1" + CODE[11:], ParseError.BAD_ALPHABET),
        (CODE[:10] + "8" + CODE[11:], ParseError.BAD_ALPHABET),
        (CODE[:-1] + "=", ParseError.BAD_ALPHABET),
        (CODE[:-1] + "\u00c9", ParseError.BAD_ALPHABET),
        (CODE[:-1] + "\U0001f600", ParseError.BAD_ALPHABET),
        (CODE[:-1] + "\ud800", ParseError.BAD_ALPHABET),
    ],
)
def test_bad_texts(text, error):
    assert parse(text) == error


@given(st.text(max_size=300))
def test_parse_never_raises(text):
    result = parse(text)
    assert isinstance(result, (ParsedCode, ParseError))
    assert result == ParseError.NOT_SIGNED or text.startswith(ENVELOPE_V1)
    code_digest(text)  # any text, lone surrogates included, has a digest


@given(st.text(alphabet=ALPHABET, min_size=BODY_V1_CHARS, max_size=BODY_V1_CHARS))
def test_random_bodies_never_verify(body):
    result = parse(ENVELOPE_V1 + body)
    if isinstance(result, ParsedCode):
        assert not verify(result, RING)
    else:
        assert result == ParseError.BAD_PAYLOAD


def bad_payload(kind: int, ident: int) -> str:
    payload = PAYLOAD_V1.pack(1, kind, ident, 42, 7, 3)
    signature = KEY.sign(ENVELOPE_V1.encode() + payload)
    return ENVELOPE_V1 + base64.b32encode(payload + signature).decode().rstrip("=")


def test_bad_payload_even_when_signed():
    assert parse(bad_payload(2, 5)) == ParseError.BAD_PAYLOAD
    assert parse(bad_payload(255, 5)) == ParseError.BAD_PAYLOAD
    assert parse(bad_payload(0, 0)) == ParseError.BAD_PAYLOAD
    assert isinstance(parse(bad_payload(1, 5)), ParsedCode)


def test_v1_body_has_no_padding_bits():
    """85 bytes are exactly 136 base32 characters: every body text decodes to distinct
    bytes, so no two texts are the same code (no non-canonical padding bits exist)."""
    assert (PAYLOAD_V1.size + 64) * 8 == BODY_V1_CHARS * 5
    seen = set()
    for ch in ALPHABET:
        body = CODE[3:-1] + ch
        decoded = base64.b32decode(body)
        assert base64.b32encode(decoded).decode() == body
        seen.add(decoded)
        result = parse(ENVELOPE_V1 + body)
        assert isinstance(result, ParsedCode)
        assert verify(result, RING) == (ch == CODE[-1])
    assert len(seen) == 32


def test_signature_covers_the_envelope_version():
    payload = PAYLOAD_V1.pack(1, 0, 5, 42, 7, 3)
    signature = KEY.sign(payload)  # signed without the "GK1" prefix
    text = ENVELOPE_V1 + base64.b32encode(payload + signature).decode().rstrip("=")
    parsed = parse(text)
    assert isinstance(parsed, ParsedCode)
    assert not verify(parsed, RING)


def test_claims_swapped_between_two_codes_do_not_verify():
    other = sign(Claims(1, Kind.TICKET, 987, 42, 7, 3), KEY)
    a = base64.b32decode(CODE[3:])
    b = base64.b32decode(other[3:])
    swapped = ENVELOPE_V1 + base64.b32encode(b[:21] + a[21:]).decode()
    assert not accepted(swapped)
    assert accepted(other)


def test_unknown_key_id_and_wrong_key():
    assert not accepted(sign(Claims(2, Kind.TICKET, 5, 1, 1, 1), KEY))
    assert not accepted(sign(Claims(1, Kind.TICKET, 5, 1, 1, 1), OTHER))
    assert not accepted(CODE, KeyRing())


def test_revoked_key_is_refused_like_an_unknown_one():
    ring = KeyRing.from_raw({1: raw(KEY), 2: raw(OTHER)}, {1})
    assert ring.is_revoked(1) and not ring.is_revoked(2)
    assert ring.usable(1) is None
    assert not accepted(CODE, ring)
    assert accepted(sign(Claims(2, Kind.PASS, 5, 1, 0, 0), OTHER), ring)
    assert len(ring) == 2


def test_is_signed_text_and_normalize():
    assert is_signed_text("GK1ABC") and is_signed_text("GK9")
    assert not is_signed_text("GK") and not is_signed_text("GKX1") and not is_signed_text("")
    assert normalize(f" \t{CODE}\r\n") == CODE


def test_code_digest_is_exact_text():
    assert code_digest(CODE) != code_digest(CODE.lower())
    assert code_digest(CODE) != code_digest(CODE + " ")
    assert len(code_digest(CODE)) == 16
    assert code_digest("x") == code_digest("x")


@given(st.binary(min_size=0, max_size=90), st.integers(min_value=0, max_value=31))
def test_fast_base32_decoder_agrees_with_the_standard_library(raw, last):
    """``parse`` decodes with integer arithmetic: the same bytes as ``base64.b32decode``
    for every canonical text, and None for any text whose padding bits are not zero or
    whose length cannot hold the bytes (here checked on every length, not only v1's)."""
    from sync.codes import _b32_canonical

    body = base64.b32encode(raw).decode().rstrip("=")
    assert _b32_canonical(body, len(raw)) == raw
    if body:
        # Any other last character: either another canonical text (other bytes), or
        # one with stray padding bits, which must be refused.
        other = body[:-1] + ALPHABET[last]
        padded = other + "=" * (-len(other) % 8)
        decoded = base64.b32decode(padded)
        canonical = base64.b32encode(decoded).decode().rstrip("=") == other
        assert _b32_canonical(other, len(raw)) == (decoded if canonical else None)
    assert _b32_canonical(body + "A", len(raw)) is None  # five bits too many
