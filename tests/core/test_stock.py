"""Printed stock, quick cancellation (back office and edge), reseller imports."""

from __future__ import annotations

from sync.codes import code_digest
from tests.core.conftest import VENUE, line, order_body
from tests.core.test_sync import node_token, scan, upload


async def print_stock(core, event, quantity=3, channel="box_office"):
    body = {**line(event, quantity), "channel": channel}
    return (await core.ok("POST", "/api/v1/stock", body))["tickets"]


async def sold(core, event):
    data = await core.ok("GET", f"/api/v1/dates/{event['dates'][0]['id']}/availability")
    return data["zones"][0]["sold"]


async def test_printed_stock_takes_seats_and_quick_cancel_returns_them(core, event):
    tickets = await print_stock(core, event)
    assert {(t["sold"], t["channel"], t["order"]) for t in tickets} == {(False, "box_office", "")}
    assert await sold(core, event) == 3
    answer = await core.ok("POST", "/api/v1/stock/quick-cancel", {"code": tickets[0]["code"]})
    assert (answer["result"], answer["reason"], answer["ticket"]) == (
        "accepted",
        "ok",
        tickets[0]["id"],
    )
    assert await sold(core, event) == 2
    again = await core.ok("POST", "/api/v1/stock/quick-cancel", {"code": tickets[0]["code"]})
    assert (again["result"], again["reason"]) == ("rejected", "cancelled")
    detail = await core.ok("GET", f"/api/v1/tickets/{tickets[0]['id']}")
    assert detail["status"] == "cancelled" and detail["cancel_reason"] == "quick_cancel"


async def test_online_customer_ticket_is_never_quick_cancelled(core, event):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event)]))
    answer = await core.ok(
        "POST", "/api/v1/stock/quick-cancel", {"code": order["tickets"][0]["code"]}
    )
    assert (answer["result"], answer["reason"]) == ("rejected", "sold")
    unknown = await core.ok("POST", "/api/v1/stock/quick-cancel", {"code": "NOPE"})
    assert (unknown["result"], unknown["reason"]) == ("rejected", "unknown")


async def test_used_stock_is_never_quick_cancelled(core, event):
    tickets = await print_stock(core, event, 1)
    token = await node_token(core)
    await upload(core, token, "n1", [scan("u-1", tickets[0]["id"], 10.0, event["dates"][0]["id"])])
    answer = await core.ok("POST", "/api/v1/stock/quick-cancel", {"code": tickets[0]["code"]})
    assert (answer["result"], answer["reason"]) == ("rejected", "already_used")


async def test_edge_quick_cancel_is_idempotent_by_scan_id(core, event):
    tickets = await print_stock(core, event, 2, channel="reseller")
    token = await node_token(core)
    auth = {"Authorization": f"Bearer {token}"}
    path = f"/api/v1/venues/{VENUE}/quick-cancel"
    first = await core.ok("POST", path, {"scan_id": "q1", "code": tickets[0]["code"]}, headers=auth)
    assert (first["result"], first["reason"]) == ("accepted", "ok")
    retry = await core.ok("POST", path, {"scan_id": "q1", "code": tickets[0]["code"]}, headers=auth)
    assert retry == first
    other = await core.ok("POST", path, {"scan_id": "q2", "code": tickets[0]["code"]}, headers=auth)
    assert other["reason"] == "cancelled"
    assert await sold(core, event) == 1
    changes = await core.ok("GET", f"/api/v1/venues/{VENUE}/changes?after=0", headers=auth)
    latest = {
        c["record"][0]: c["record"] for c in changes["changes"] if c["type"] == "record_changed"
    }
    assert latest[tickets[0]["id"]][2] == 1  # Status.CANCELLED
    assert latest[tickets[1]["id"]][8] is False  # Record.sold: still quick-cancellable stock
    status, _ = await core.call("POST", path, {"scan_id": "", "code": "x"}, headers=auth)
    assert status == 400


async def test_selling_stock_makes_it_a_customer_ticket(core, event):
    tickets = await print_stock(core, event, 2)
    order = await core.ok(
        "POST",
        "/api/v1/stock/sell",
        {"tickets": [tickets[0]["id"]], "customer": {"name": "Walk In"}, "payment": "cash"},
    )
    assert order["channel"] == "box_office" and order["total"] == "45.50"
    assert order["tickets"][0]["sold"] is True and order["tickets"][0]["holder"] == "Walk In"
    answer = await core.ok("POST", "/api/v1/stock/quick-cancel", {"code": tickets[0]["code"]})
    assert answer["reason"] == "sold"
    status, err = await core.call(
        "POST", "/api/v1/stock/sell", {"tickets": [tickets[0]["id"]], "customer": {"name": "Again"}}
    )
    assert (status, err["error"]) == (409, "not_stock")


async def test_reseller_csv_import_becomes_plain_code_tickets(core, event):
    csv = "barcode,name\n9780000000011,Ann\n9780000000028,Bob\n\n9780000000035\n"
    body = {**line(event), "csv": csv, "reseller": "TicketCorner"}
    body.pop("quantity")
    result = await core.ok("POST", "/api/v1/imports/reseller", body)
    assert result["count"] == 3
    assert await sold(core, event) == 3
    detail = await core.ok("GET", f"/api/v1/tickets/{result['tickets'][0]}")
    assert (detail["code"], detail["holder"], detail["channel"]) == (
        "9780000000011",
        "Ann",
        "reseller",
    )
    assert detail["key_id"] == 0
    token = await node_token(core)
    async with core.session.get(
        f"{core.url}/api/v1/venues/{VENUE}/snapshot", headers={"Authorization": f"Bearer {token}"}
    ) as r:
        raw = await r.read()
    assert code_digest("9780000000011") in raw
    for csv_text, code in (
        ("9780000000011\n", 409),
        ("A\nA\n", 400),
        ("GK1ABC\n", 400),
        ("\n\n", 400),
    ):
        status, err = await core.call("POST", "/api/v1/imports/reseller", {**body, "csv": csv_text})
        assert status == code, (csv_text, err)
    assert await sold(core, event) == 3


async def test_reseller_csv_from_a_european_spreadsheet(core, event):
    """Spreadsheets where the comma is the decimal mark (fr, de, it) export CSV with
    semicolons; tab-separated exports exist too. Before, such a line was stored whole
    as one barcode ("9780000000042;Ann") that no scanner would ever read."""
    base = {**line(event), "reseller": "Billetterie"}
    base.pop("quantity")
    for text, codes, holders in (
        ('code;nom\n9780000000042;"Meier, Ana"\n9780000000059;Bob\n',
         ["9780000000042", "9780000000059"], ["Meier, Ana", "Bob"]),
        ("barcode\tname\n9780000000066\tEve\n", ["9780000000066"], ["Eve"]),
        ("9780000000073\n9780000000080\n", ["9780000000073", "9780000000080"], ["", ""]),
    ):
        result = await core.ok("POST", "/api/v1/imports/reseller", {**base, "csv": text})
        got = [await core.ok("GET", f"/api/v1/tickets/{t}") for t in result["tickets"]]
        assert [(t["code"], t["holder"]) for t in got] == list(zip(codes, holders)), text
    # A delimiter left inside a code means the file was split wrongly: refused, loudly.
    status, err = await core.call(
        "POST", "/api/v1/imports/reseller", {**base, "csv": "9780000000097;x\n1,2;3\n"}
    )
    assert (status, err["error"]) == (400, "bad_code"), err


async def test_headerless_semicolon_csv_with_a_decimal_comma_column_imports(core, event):
    """A French/German export without a header, whose third column is an amount with the
    decimal comma (or whose names read "Meier, Ana"): commas on every line too, and still
    split on the semicolons (found in review: csv.Sniffer preferred the comma)."""
    base = {**line(event), "reseller": "Billetterie"}
    base.pop("quantity")
    for text, codes in (
        ("9780000000042;Ann;12,50\n9780000000059;Bob;15,00\n", ["9780000000042", "9780000000059"]),
        ("9780000000066;Meier, Ana\n", ["9780000000066"]),
    ):
        status, result = await core.call("POST", "/api/v1/imports/reseller", {**base, "csv": text})
        assert status == 201, (text, result)
        got = [await core.ok("GET", f"/api/v1/tickets/{t}") for t in result["tickets"]]
        assert [t["code"] for t in got] == codes
