"""No input makes the core answer 500: garbage bodies on every route that takes one."""

from __future__ import annotations

import io
import json

from tests.core.conftest import TOKEN, VENUE

ROUTES = [
    ("POST", "/api/v1/events"),
    ("POST", "/api/v1/events/1/dates"),
    ("PATCH", "/api/v1/dates/1"),
    ("POST", "/api/v1/orders"),
    ("POST", "/api/v1/orders/ABCDEFG/pay"),
    ("POST", "/api/v1/orders/ABCDEFG/cancel"),
    ("POST", "/api/v1/pass-products"),
    ("POST", "/api/v1/pass-products/1/events"),
    ("POST", "/api/v1/tickets/1/media"),
    ("POST", "/api/v1/stock"),
    ("POST", "/api/v1/stock/sell"),
    ("POST", "/api/v1/stock/quick-cancel"),
    ("POST", "/api/v1/imports/reseller"),
    ("POST", "/api/v1/keys/1/revoke"),
    ("POST", f"/api/v1/venues/{VENUE}/tokens"),
    ("POST", f"/api/v1/venues/{VENUE}/scans"),
    ("POST", f"/api/v1/venues/{VENUE}/quick-cancel"),
]

BODIES = [
    b"",
    b"null",
    b"{}",
    b"[]",
    b'"text"',
    b"12",
    b"{",
    b"\xff\xfe\x00",
    b'{"a": ' * 200 + b"1" + b"}" * 200,
    json.dumps({"date": -1, "zone": 2**64, "rate": "x", "quantity": 1e300}).encode(),
    json.dumps({"tickets": [0], "uid": "", "code": "", "scan_id": "s"}).encode(),
    json.dumps({"node": "n", "items": [{"scan_id": "s", "ticket": -5}]}).encode(),
    json.dumps({"start": "yesterday", "end": None}).encode(),
    json.dumps({"csv": "x" * 300, "date": 1, "zone": 1, "rate": 1}).encode(),
    json.dumps({"name": "\u0000" * 10, "venue": "", "events": [{"event": 1}]}).encode(),
]


async def test_garbage_never_gets_a_500(core, event):
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for method, path in ROUTES:
        for raw in BODIES:
            status, data = await core.call(method, path, data=raw, headers=headers)
            assert status < 500, (method, path, raw[:40], status, data)
            if status >= 400:
                assert set(data) == {"error", "message"}, (path, data)
    status, data = await core.call(
        "POST", "/api/v1/orders", data=io.BytesIO(b"x" * (17 * 1024 * 1024)), headers=headers
    )
    assert status == 413 and data["error"] == "body_too_large"
    status, _ = await core.call("POST", f"/api/v1/venues/{'v' * 300}/tokens", {})
    assert status == 400
