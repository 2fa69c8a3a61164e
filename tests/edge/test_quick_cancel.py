"""POST /api/v1/quick-cancel: printed, unsold box-office stock is cancelled at once;
a ticket sold to a customer, or already used, never is."""

from __future__ import annotations

from sync.snapshot import Channel, Status
from tests.conftest import run_edge

QC = "/api/v1/quick-cancel"


async def quick_cancel(node, code, scan_id):
    status, body = await node.call("POST", QC, {"scan_id": scan_id, "code": code})
    assert status == 200, body
    return body


async def test_unsold_box_office_stock_is_cancelled_then_refused(edge, venue):
    stock = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    other = venue.add_ticket("other", channel=Channel.BOX_OFFICE, sold=False)
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    answer = await quick_cancel(node, stock, "qc-1")
    assert (answer["scan_id"], answer["result"], answer["reason"]) == (
        "qc-1", "accepted", "ok")
    scan = await node.scan(stock)
    assert (scan["result"], scan["reason"]) == ("rejected", "cancelled")
    assert (await node.scan(other))["reason"] == "ok"
    status, metrics = await node.call("GET", "/metrics")
    assert status == 200
    assert "edge_quick_cancels_total 1" in metrics.splitlines()


async def test_repeat_with_same_scan_id_same_answer(edge, venue):
    stock = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    node = await edge.start()
    first = await quick_cancel(node, stock, "qc-1")
    assert await quick_cancel(node, stock, "qc-1") == first
    # A new scan_id sees the stock already cancelled.
    again = await quick_cancel(node, stock, "qc-2")
    assert (again["result"], again["reason"]) == ("rejected", "cancelled")


async def test_online_sold_ticket_is_refused(edge, venue):
    online = venue.add_ticket("online")
    sold_at_box_office = venue.add_ticket("bo", channel=Channel.BOX_OFFICE, sold=True)
    online_unsold = venue.add_ticket("weird", channel=Channel.ONLINE, sold=False)
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    for i, code in enumerate((online, sold_at_box_office, online_unsold)):
        answer = await quick_cancel(node, code, f"qc-{i}")
        assert (answer["result"], answer["reason"]) == ("rejected", "sold")
        assert (await node.scan(code))["reason"] == "ok"


async def test_used_stock_is_refused(edge, venue):
    stock = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    assert (await node.scan(stock))["reason"] == "ok"
    answer = await quick_cancel(node, stock, "qc-1")
    assert (answer["result"], answer["reason"]) == ("rejected", "already_used")
    assert await quick_cancel(node, stock, "qc-1") == answer


async def test_unknown_malformed_forged_and_cancelled(edge, venue):
    cancelled = venue.add_ticket("c", channel=Channel.BOX_OFFICE, sold=False,
                                 status=Status.CANCELLED)
    good = venue.add_ticket("g", channel=Channel.BOX_OFFICE, sold=False)
    node = await edge.start()
    cases = [
        ("NOT-A-TICKET", "unknown"),
        ("\x00\x01", "malformed"),
        ("", "malformed"),
        (good[:80] + ("A" if good[80] != "A" else "B") + good[81:], "forged"),
        (cancelled, "cancelled"),
        (venue.unsynced(), "sold"),
    ]
    for i, (code, reason) in enumerate(cases):
        answer = await quick_cancel(node, code, f"q{i}")
        assert (answer["result"], answer["reason"]) == ("rejected", reason), code


async def test_scan_ids_of_scans_and_quick_cancels_do_not_collide(edge, venue):
    stock = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    ticket = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    scan = await node.scan(ticket, scan_id="same-id")
    answer = await quick_cancel(node, stock, "same-id")
    assert answer["reason"] == "ok"
    assert await node.scan(ticket, scan_id="same-id") == scan


async def test_quick_cancel_survives_restart(tmp_path, venue):
    from edge.importer import import_file

    stock = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    data = tmp_path / "node"
    import_file(data, venue.write(tmp_path / "v.snap"))
    async with run_edge(data, venue) as node:
        await node.gate("main", mode="single", dates=[10])
        first = await quick_cancel(node, stock, "qc-1")
    async with run_edge(data, venue) as node:
        assert (await node.scan(stock))["reason"] == "cancelled"
        assert await quick_cancel(node, stock, "qc-1") == first


async def test_a_scan_id_cannot_reach_a_quick_cancels_remembered_answer(edge, venue):
    """Quick cancels are remembered under b"qc\\0" + scan_id: a scan whose id starts with
    that must not read or pre-empt them (it answered 500, or faked an accepted cancel)."""
    stock = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    other = venue.add_ticket("other", channel=Channel.BOX_OFFICE, sold=False)
    ticket = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    assert (await quick_cancel(node, stock, "x"))["reason"] == "ok"
    for sid in ("qc\x00x", "qc\x00y"):
        status, body = await node.call("POST", "/api/v1/scans",
                                       {"scan_id": sid, "code": ticket, "gate": "main"})
        assert status == 400 and set(body) == {"error", "message"}
    answer = await quick_cancel(node, other, "y")
    assert (answer["result"], answer["reason"]) == ("accepted", "ok")
    assert (await node.scan(other))["reason"] == "cancelled"
    assert (await node.scan(ticket))["reason"] == "ok"


async def test_only_what_the_core_would_cancel_is_cancelled(edge, venue):
    """The core cancels stock by its printed code, and never a pass: the node used to
    cancel a card's stock by its media id, or an unsold pass, which the core then
    refused, and the holder stayed refused at this node alone."""
    import msgspec

    card_stock = venue.add_ticket("card", channel=Channel.BOX_OFFICE, sold=False,
                                  media=("04A1B2C3D4",))
    pass_code = venue.add_pass("pass", 500)
    venue.records[-1] = msgspec.structs.replace(
        venue.records[-1], channel=Channel.BOX_OFFICE, sold=False)
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    by_card = await quick_cancel(node, "04A1B2C3D4", "qc-card")
    assert (by_card["result"], by_card["reason"]) == ("rejected", "unknown")
    unsold_pass = await quick_cancel(node, pass_code, "qc-pass")
    assert (unsold_pass["result"], unsold_pass["reason"]) == ("rejected", "sold")
    # The printed code still cancels that stock.
    by_code = await quick_cancel(node, card_stock, "qc-code")
    assert (by_code["result"], by_code["reason"]) == ("accepted", "ok")
    assert (await node.scan("04A1B2C3D4"))["reason"] == "cancelled"


async def test_while_a_snapshot_is_being_stored_the_api_answers_503_resyncing(edge, venue):
    from edge.api import SERVICE

    stock = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    node = await edge.start()
    done = await quick_cancel(node, stock, "qc-done")
    service = node.app[SERVICE]
    service.importing += 1  # as ``Follower.bootstrap`` does around the import
    try:
        status, body = await node.call("POST", QC, {"scan_id": "qc-new", "code": stock})
        assert status == 503 and body["error"] == "resyncing", body
        # An answer already given is still given: the retry of a quick cancel never waits.
        assert await quick_cancel(node, stock, "qc-done") == done
    finally:
        service.importing -= 1
    again = await quick_cancel(node, stock, "qc-new")
    assert (again["result"], again["reason"]) == ("rejected", "cancelled")
