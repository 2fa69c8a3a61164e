"""Inputs a review found to give a 500 or a wrong answer, each through a real core."""

from __future__ import annotations

import msgspec

from tests.core.conftest import TOKEN, VENUE, event_body, line

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def _stock(event, rate: int = 0) -> dict:
    return {**line(event, rate=rate), "quantity": 1}


def _scan(scan_id: str, **over) -> dict:
    item = {
        "scan_id": scan_id,
        "ticket": 0,
        "result": "rejected",
        "reason": "unknown",
        "direction": "entry",
        "gate": "g",
        "mode": "single",
        "date": 0,
        "scanned_at": 1.0,
        "logged_at": 1.0,
    }
    return {**item, **over}


async def test_non_ascii_digits_in_an_id_are_not_found(core, event):
    # '²'.isdigit() is True but int('²') raises: it was a 500.
    for path in ("/api/v1/tickets/\u00b2", "/api/v1/events/\u00b2", "/api/v1/keys/\u00b3/revoke"):
        method = "POST" if path.endswith("revoke") else "GET"
        status, data = await core.call(method, path, {} if method == "POST" else None)
        assert status == 404, (path, status, data)


async def test_dates_outside_what_datetime_holds_in_utc_are_refused(core, event):
    for start, end in (
        ("0001-01-01T00:30:00+01:00", "0001-01-01T03:00:00+01:00"),  # year 0 in UTC
        ("9999-12-31T22:00:00-05:00", "9999-12-31T23:00:00-05:00"),  # year 10000 in UTC
    ):
        body = event_body()
        body["dates"] = [{"start": start, "end": end}]
        status, data = await core.call("POST", "/api/v1/events", body)
        assert status == 400 and data["error"] == "bad_dates", (start, status, data)
    date = event["dates"][0]["id"]
    for patch in ({"start": "0001-01-01T00:00:00+00:00"}, {"end": "9999-12-31T23:59:59-05:00"}):
        status, data = await core.call("PATCH", f"/api/v1/dates/{date}", patch)
        assert status == 400 and data["error"] == "bad_dates", (patch, status, data)
    # Nothing changed, and the event still reads back.
    assert (await core.ok("GET", f"/api/v1/events/{event['id']}"))["dates"] == event["dates"]


async def test_scan_items_out_of_range_are_refused_one_by_one(core, event):
    await core.ok("POST", f"/api/v1/venues/{VENUE}/tokens", {})
    path = f"/api/v1/venues/{VENUE}/scans"
    items = [
        _scan("big-date", date=2**63),  # beyond SQLite's integer: was a 500
        _scan("neg-date", date=-(2**63) - 1),
        _scan("fine"),
    ]
    answer = await core.ok("POST", path, {"node": "n1", "items": items})
    assert [(a["scan_id"], a["status"]) for a in answer["acks"]] == [
        ("big-date", "refused"),
        ("neg-date", "refused"),
        ("fine", "stored"),
    ]
    # msgpack carries NaN: stored as NULL, it failed the whole upload with a 409, and
    # every retry of it too, so the node's later scans never reached the core.
    raw = msgspec.msgpack.encode(
        {"node": "n1", "items": [_scan("nan", scanned_at=float("nan")), _scan("after-nan")]}
    )
    status, answer = await core.call(
        "POST",
        path,
        data=raw,
        headers={**HEADERS, "Content-Type": "application/msgpack", "Accept": "application/json"},
    )
    assert status == 200, answer
    assert [(a["scan_id"], a["status"]) for a in answer["acks"]] == [
        ("nan", "refused"),
        ("after-nan", "stored"),
    ]


async def test_stock_of_two_currencies_is_not_sold_in_one_order(core, event):
    euro = await core.ok("POST", "/api/v1/events", event_body(currency="EUR"))
    chf = (await core.ok("POST", "/api/v1/stock", _stock(event)))["tickets"][0]
    eur = (await core.ok("POST", "/api/v1/stock", _stock(euro, rate=1)))["tickets"][0]
    # Was 201 with total "65.50" CHF: 45.50 CHF plus 20 EUR counted as francs.
    status, data = await core.call(
        "POST", "/api/v1/stock/sell", {"tickets": [chf["id"], eur["id"]], "customer": {"name": "X"}}
    )
    assert status == 400 and data["error"] == "mixed_currencies", (status, data)
    # Nothing was sold: each still sells on its own, in its own currency.
    order = await core.ok(
        "POST", "/api/v1/stock/sell", {"tickets": [eur["id"]], "customer": {"name": "X"}}
    )
    assert (order["total"], order["currency"]) == ("20.00", "EUR")


async def test_reseller_csv_with_a_byte_order_mark_imports(core, event):
    # Excel's "CSV UTF-8" starts with U+FEFF: the header was then a 400 bad_code.
    body = {**_stock(event), "csv": "\ufeffbarcode,name\nABC123,Bob\nABC124,Eve\n"}
    del body["quantity"]
    found = await core.ok("POST", "/api/v1/imports/reseller", body)
    assert found["count"] == 2
    ticket = await core.ok("GET", f"/api/v1/tickets/{found['tickets'][0]}")
    assert (ticket["code"], ticket["holder"]) == ("ABC123", "Bob")
