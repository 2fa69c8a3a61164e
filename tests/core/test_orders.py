"""Orders through the real server: capacity, payment, cancellation, bad input."""

from __future__ import annotations

import asyncio

from tests.core.conftest import event_body, line, order_body


async def availability(core, event, zone=0, date=0):
    data = await core.ok("GET", f"/api/v1/dates/{event['dates'][date]['id']}/availability")
    return data["zones"][zone]


async def test_200_concurrent_orders_for_100_seats_sell_exactly_100(core):
    event = await core.ok("POST", "/api/v1/events", event_body(capacity=100))
    body = order_body([line(event, 1)])
    results = await asyncio.gather(*(core.call("POST", "/api/v1/orders", body) for _ in range(200)))
    statuses = [status for status, _ in results]
    assert statuses.count(201) == 100
    assert statuses.count(409) == 100
    assert {data["error"] for status, data in results if status == 409} == {"sold_out"}
    zone = await availability(core, event)
    assert (zone["sold"], zone["available"]) == (100, 0)
    ids = {data["tickets"][0]["id"] for status, data in results if status == 201}
    assert len(ids) == 100


async def test_card_order_is_paid_with_decimal_total(core, event):
    order = await core.ok(
        "POST", "/api/v1/orders", order_body([line(event, 2), line(event, 1, rate=1)])
    )
    assert order["status"] == "paid"
    assert order["total"] == "111.00"
    assert order["currency"] == "CHF"
    assert len(order["number"]) == 7
    assert {t["status"] for t in order["tickets"]} == {"valid"}
    again = await core.ok("GET", f"/api/v1/orders/{order['number'].lower()}")
    assert again["number"] == order["number"]


async def test_free_invitations_cost_nothing(core, event):
    order = await core.ok(
        "POST", "/api/v1/orders", order_body([line(event, 2)], payment="free", channel="box_office")
    )
    assert order["status"] == "paid"
    assert order["total"] == "0.00"


async def test_invoice_order_is_unpaid_until_paid(core, event):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event, 2)], payment="invoice"))
    assert order["status"] == "pending"
    assert order["due_at"] is not None
    assert {t["status"] for t in order["tickets"]} == {"unpaid"}
    paid = await core.ok("POST", f"/api/v1/orders/{order['number']}/pay")
    assert paid["status"] == "paid"
    assert {t["status"] for t in paid["tickets"]} == {"valid"}
    status, err = await core.call("POST", f"/api/v1/orders/{order['number']}/pay")
    assert (status, err["error"]) == (409, "already_paid")


async def test_partial_cancel_of_awaiting_invoice_order_is_refused(core, event):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event, 2)], payment="invoice"))
    first = order["tickets"][0]["id"]
    status, err = await core.call(
        "POST", f"/api/v1/orders/{order['number']}/cancel", {"tickets": [first]}
    )
    assert (status, err["error"]) == (409, "partial_cancel_unpaid")
    whole = await core.ok("POST", f"/api/v1/orders/{order['number']}/cancel", {"reason": "asked"})
    assert whole["status"] == "cancelled"
    assert {t["status"] for t in whole["tickets"]} == {"cancelled"}
    assert {t["refund_method"] for t in whole["tickets"]} == {"none"}


async def test_partial_cancel_returns_the_seat_and_records_refund(core, event):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event, 3)]))
    assert (await availability(core, event))["sold"] == 3
    target = order["tickets"][1]["id"]
    after = await core.ok(
        "POST",
        f"/api/v1/orders/{order['number']}/cancel",
        {"tickets": [target], "reason": "ill", "refund": "card"},
    )
    assert after["status"] == "paid"
    assert after["refunded"] == "45.50"
    cancelled = [t for t in after["tickets"] if t["status"] == "cancelled"]
    assert [(t["id"], t["cancel_reason"], t["refund_method"]) for t in cancelled] == [
        (target, "ill", "card")
    ]
    assert (await availability(core, event))["sold"] == 2
    status, err = await core.call(
        "POST", f"/api/v1/orders/{order['number']}/cancel", {"tickets": [target]}
    )
    assert (status, err["error"]) == (404, "ticket_not_in_order")
    whole = await core.ok("POST", f"/api/v1/orders/{order['number']}/cancel")
    assert whole["status"] == "cancelled"
    assert whole["refunded"] == "136.50"
    assert (await availability(core, event))["sold"] == 0


async def test_sold_out_order_takes_nothing(core):
    event = await core.ok("POST", "/api/v1/events", event_body(capacity=3))
    status, err = await core.call(
        "POST", "/api/v1/orders", order_body([line(event, 2), line(event, 2)])
    )
    assert (status, err["error"]) == (409, "sold_out")
    assert (await availability(core, event))["sold"] == 0


async def test_bad_bodies_and_unknown_ids_get_4xx(core, event):
    cases = [
        ("POST", "/api/v1/orders", b"{not json"),
        ("POST", "/api/v1/orders", b'{"customer": {"name": "x"}}'),
        ("POST", "/api/v1/orders", b""),
        (
            "POST",
            "/api/v1/events",
            b'{"name": "x", "venue": "v", "dates": [], "zones": [], "rates": []}',
        ),
        ("POST", "/api/v1/events", b"[1, 2, 3]"),
        ("POST", "/api/v1/orders", b"\xff\xfe garbage"),
    ]
    for method, path, raw in cases:
        status, err = await core.call(
            method, path, data=raw, headers={"Authorization": "Bearer test-admin-token"}
        )
        assert 400 <= status < 500, (path, raw, status)
        assert set(err) == {"error", "message"}
    bad_orders = [
        order_body(
            [{"date": 999, "zone": event["zones"][0]["id"], "rate": event["rates"][0]["id"]}]
        ),
        order_body(
            [{"date": event["dates"][0]["id"], "zone": 999, "rate": event["rates"][0]["id"]}]
        ),
        order_body([line(event, 0)]),
        order_body([line(event, 1)], payment="bitcoin"),
        order_body([line(event, 1)], payment="cash", channel="online"),
        order_body([{"pass": 4242, "quantity": 1}]),
        order_body([{**line(event, 1), "extra": True}]),
        order_body([{**line(event, 1), "date": 2**70}]),
    ]
    for body in bad_orders:
        status, err = await core.call("POST", "/api/v1/orders", body)
        assert 400 <= status < 500, (body, status, err)
        assert "error" in err and "message" in err
    for path in (
        "/api/v1/tickets/999999",
        "/api/v1/tickets/abc",
        "/api/v1/tickets/99999999999999999999999",
        "/api/v1/orders/NOPE999",
        "/api/v1/orders/%E2%98%83",
        "/api/v1/dates/424242/availability",
        "/api/v1/events/77",
        "/api/v1/pass-products/5",
        "/api/v1/nothing-here",
    ):
        status, err = await core.call("GET", path)
        assert status == 404, (path, status)
        assert "error" in err
    status, err = await core.call("POST", "/api/v1/orders/NOPE999/cancel", {})
    assert status == 404
    status, err = await core.call("DELETE", "/api/v1/orders")
    assert status == 405


async def test_admin_token_required(core, event):
    status, err = await core.call("POST", "/api/v1/orders", order_body([line(event)]), headers={})
    assert (status, err["error"]) == (401, "unauthorized")
    status, _ = await core.call("GET", "/api/v1/events", headers={"Authorization": "Bearer wrong"})
    assert status == 401
    status, body = await core.call("GET", "/api/v1/status", headers={})
    assert status == 200 and body["service"] == "core"


async def test_bad_catalogue_input(core):
    for extra in (
        {"rates": [{"name": "x", "price": "-1"}]},
        {"rates": [{"name": "x", "price": "1.001"}]},
        {"rates": [{"name": "x", "price": "NaN"}]},
        {"timezone": "Mars/Olympus"},
        {"dates": [{"start": "2030-06-10T20:00:00", "end": "2030-06-10T23:00:00+02:00"}]},
        {"dates": [{"start": "2030-06-10T20:00:00+02:00", "end": "2030-06-10T19:00:00+02:00"}]},
        {"zones": [{"name": "A", "capacity": 1}, {"name": "A", "capacity": 2}]},
        {"currency": "chf"},
    ):
        status, err = await core.call("POST", "/api/v1/events", event_body(**extra))
        assert status == 400, (extra, status, err)
