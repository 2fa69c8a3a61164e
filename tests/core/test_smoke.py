from __future__ import annotations

from tests.core.conftest import line, order_body


async def test_event_and_order(core, event):
    assert [z["name"] for z in event["zones"]] == ["Floor", "Balcony"]
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event, 2)]))
    assert order["status"] == "paid"
    assert order["total"] == "91.00"
    assert len(order["tickets"]) == 2
    ticket = await core.ok("GET", f"/api/v1/tickets/{order['tickets'][0]['id']}")
    assert ticket["status"] == "valid"
    assert ticket["entries"] == [] and ticket["conflicts"] == []
