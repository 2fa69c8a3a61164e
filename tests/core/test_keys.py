"""Signing keys: codes verify with the public key only; rotation and revocation."""

from __future__ import annotations

from sync.codes import KeyRing, parse, verify
from tests.core.conftest import VENUE, line, order_body


async def keyring(core):
    catalog = await core.ok("GET", f"/api/v1/venues/{VENUE}/catalog")
    keys = {k[0]: bytes.fromhex(_hex(k[1])) for k in catalog["keys"]}
    revoked = {k[0] for k in catalog["keys"] if k[2]}
    return KeyRing.from_raw(keys, revoked)


def _hex(value):
    import base64

    return base64.b64decode(value).hex()


async def test_signed_code_verifies_with_the_public_key_only(core, event):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event)]))
    ticket = order["tickets"][0]
    parsed = parse(ticket["code"])
    assert parsed.claims.id == ticket["id"]
    assert parsed.claims.date == event["dates"][0]["id"]
    assert parsed.claims.zone == event["zones"][0]["id"]
    ring = await keyring(core)
    assert verify(parsed, ring)
    listed = await core.ok("GET", "/api/v1/keys")
    assert set(listed[0]) == {"id", "public", "active", "revoked"}  # no private half
    tampered = ticket["code"][:-4] + ("AAAA" if ticket["code"][-4:] != "AAAA" else "BBBB")
    forged = parse(tampered)
    assert not (not isinstance(forged, int) and verify(forged, ring))


async def test_rotation_then_revocation(core, event):
    old = (await core.ok("POST", "/api/v1/orders", order_body([line(event)])))["tickets"][0]
    rotated = await core.ok("POST", "/api/v1/keys/rotate")
    assert rotated["active"] == 2
    new = (await core.ok("POST", "/api/v1/orders", order_body([line(event)])))["tickets"][0]
    assert parse(new["code"]).claims.key_id == 2
    ring = await keyring(core)
    assert verify(parse(old["code"]), ring) and verify(parse(new["code"]), ring)

    status, err = await core.call("POST", "/api/v1/keys/2/revoke")
    assert (status, err["error"]) == (409, "key_active")
    status, _ = await core.call("POST", "/api/v1/keys/77/revoke")
    assert status == 404
    revoked = await core.ok("POST", "/api/v1/keys/1/revoke", {"reissue": True})
    assert revoked == {"revoked": 1, "reissued": 1}
    ring = await keyring(core)
    assert not verify(parse(old["code"]), ring)
    reissued = await core.ok("GET", f"/api/v1/tickets/{old['id']}")
    assert reissued["code"] != old["code"] and verify(parse(reissued["code"]), ring)
    changes = await core.ok("GET", f"/api/v1/venues/{VENUE}/changes?after=0")
    kinds = [c["type"] for c in changes["changes"]]
    assert "catalog_changed" in kinds
