"""What the edge consumes: node tokens, snapshot, change feed, scan upload."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import date, datetime

import msgspec

from sync.codes import code_digest
from sync.snapshot import Record, SnapshotReader, Status
from sync.wire import ChangeBatch, RecordChanged, ScanItem, ScanUpload, UploadResult
from tests.core.conftest import VENUE, event_body, line, order_body


async def node_token(core, venue=VENUE):
    return (await core.ok("POST", f"/api/v1/venues/{venue}/tokens", {"name": "node-1"}))["token"]


async def fetch_snapshot(core, token):
    headers = {"Authorization": f"Bearer {token}"}
    async with core.session.get(f"{core.url}/api/v1/venues/{VENUE}/snapshot", headers=headers) as r:
        assert r.status == 200
        raw = await r.read()
    reader = SnapshotReader(io.BytesIO(raw))
    records = [rec for batch in reader.batches() for rec in batch]
    return reader, records


async def test_snapshot_is_the_sync_format_with_the_feed_cursor(core, event):
    token = await node_token(core)
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event, 3)], payment="invoice"))
    reader, records = await fetch_snapshot(core, token)
    assert reader.header.venue == VENUE
    changes = await core.ok("GET", f"/api/v1/venues/{VENUE}/changes?after=0")
    assert reader.header.cursor == changes["cursor"] > 0
    assert reader.header.records == 3
    assert [r.id for r in records] == [t["id"] for t in order["tickets"]]
    first = records[0]
    assert first.status == Status.UNPAID
    assert first.code_digest == code_digest(order["tickets"][0]["code"])
    assert first.order == order["number"] and first.holder == "Ada Lovelace"
    assert reader.catalog.venue == VENUE
    (day,) = reader.catalog.dates
    start = datetime.fromisoformat("2030-06-10T20:00:00+02:00")
    assert day.start == start.timestamp()
    assert day.doors_open == day.start - 3600
    assert day.day == start.date().toordinal()
    assert [z.capacity for z in reader.catalog.zones] == [100, 10]
    assert len(reader.catalog.keys) == 1 and len(reader.catalog.keys[0].public) == 32


async def test_day_is_counted_in_the_venue_timezone(core):
    body = event_body(venue="Late Club", timezone="Pacific/Auckland")
    body["venue"] = "Late Club"
    await core.ok("POST", "/api/v1/events", body)
    catalog = await core.ok("GET", "/api/v1/venues/Late%20Club/catalog")
    status, err = await core.call("POST", "/api/v1/events", {**body, "timezone": "UTC"})
    assert (status, err["error"]) == (409, "timezone_mismatch")
    # 2030-06-10T20:00+02:00 is 2030-06-11 06:00 in Auckland.
    assert catalog["dates"][0][5] == date(2030, 6, 11).toordinal()


async def test_node_token_is_scoped_to_its_venue(core, event):
    token = await node_token(core)
    other = await node_token(core, "Elsewhere")
    auth = {"Authorization": f"Bearer {token}"}
    status, _ = await core.call("GET", f"/api/v1/venues/{VENUE}/changes?after=0", headers=auth)
    assert status == 200
    status, err = await core.call(
        "GET", f"/api/v1/venues/{VENUE}/changes", headers={"Authorization": f"Bearer {other}"}
    )
    assert (status, err["error"]) == (403, "forbidden")
    status, _ = await core.call("POST", "/api/v1/orders", order_body([line(event)]), headers=auth)
    assert status == 401
    status, _ = await core.call("GET", f"/api/v1/venues/{VENUE}/snapshot", headers={})
    assert status == 401
    status, err = await core.call("GET", "/api/v1/venues/Nowhere/snapshot")
    assert (status, err["error"]) == (404, "venue_not_found")
    for query in ("after=-1", "after=x", "wait=nan", "after=1.5"):
        status, _ = await core.call("GET", f"/api/v1/venues/{VENUE}/changes?{query}")
        assert status == 400, query


async def test_long_poll_wakes_on_cancellation_and_payment(core, event):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event, 2)], payment="invoice"))
    head = (await core.ok("GET", f"/api/v1/venues/{VENUE}/changes?after=0"))["cursor"]

    async def poll(after):
        started = time.monotonic()
        batch = await core.ok("GET", f"/api/v1/venues/{VENUE}/changes?after={after}&wait=10")
        return batch, time.monotonic() - started

    waiting = asyncio.create_task(poll(head))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await core.ok("POST", f"/api/v1/orders/{order['number']}/pay")
    batch, took = await waiting
    assert took < 5
    records = [c["record"] for c in batch["changes"] if c["type"] == "record_changed"]
    assert {(r[0], r[2]) for r in records} == {
        (t["id"], int(Status.VALID)) for t in order["tickets"]
    }

    cancel = asyncio.create_task(poll(batch["cursor"]))
    await asyncio.sleep(0.1)
    await core.ok(
        "POST", f"/api/v1/orders/{order['number']}/cancel", {"tickets": [order["tickets"][0]["id"]]}
    )
    batch, _ = await cancel
    (change,) = batch["changes"]
    assert change["record"][2] == int(Status.CANCELLED)
    empty = await core.ok("GET", f"/api/v1/venues/{VENUE}/changes?after={batch['cursor']}&wait=0.2")
    assert (empty["cursor"], empty["changes"], empty["more"]) == (batch["cursor"], [], False)
    ahead = await core.ok("GET", f"/api/v1/venues/{VENUE}/changes?after=100000")
    assert ahead["changes"][0]["type"] == "resync"


async def test_changes_in_msgpack_decode_as_wire_structs(core, event):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event)]))
    async with core.session.get(
        f"{core.url}/api/v1/venues/{VENUE}/changes?after=0",
        headers={"Authorization": "Bearer test-admin-token", "Accept": "application/msgpack"},
    ) as r:
        assert r.headers["Content-Type"].startswith("application/msgpack")
        batch = msgspec.msgpack.decode(await r.read(), type=ChangeBatch)
    recs = [c.record for c in batch.changes if isinstance(c, RecordChanged)]
    assert recs and isinstance(recs[0], Record)
    assert recs[0].id == order["tickets"][0]["id"]


def scan(sid, ticket, at, date, *, node_result="accepted", reason="ok", mode="single"):
    return ScanItem(
        scan_id=sid,
        ticket=ticket,
        result=node_result,
        reason=reason,
        direction="entry",
        gate="north",
        mode=mode,
        date=date,
        scanned_at=at,
        logged_at=at + 1,
        offline=True,
    )


async def upload(core, token, node, items):
    raw = msgspec.json.encode(ScanUpload(node=node, items=items))
    async with core.session.post(
        f"{core.url}/api/v1/venues/{VENUE}/scans",
        data=raw,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    ) as r:
        assert r.status == 200, await r.text()
        return msgspec.json.decode(await r.read(), type=UploadResult)


async def test_scan_upload_once_per_scan_id_and_conflicts_across_nodes(core, event):
    token = await node_token(core)
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event)]))
    ticket = order["tickets"][0]["id"]
    date = event["dates"][0]["id"]
    result = await upload(core, token, "node-a", [scan("a-1", ticket, 100.0, date)])
    assert [(a.scan_id, a.status) for a in result.acks] == [("a-1", "stored")]
    result = await upload(
        core,
        token,
        "node-b",
        [
            scan("b-1", ticket, 150.0, date),
            scan("a-1", ticket, 100.0, date),
            scan("b-2", 999_999, 150.0, date),
            scan("b-3", 0, 151.0, 0, node_result="rejected", reason="unknown"),
        ],
    )
    assert [a.status for a in result.acks] == ["stored", "duplicate", "refused", "stored"]
    assert result.acks[2].reason == "unknown_ticket"

    detail = await core.ok("GET", f"/api/v1/tickets/{ticket}")
    assert [e["scan_id"] for e in detail["entries"]] == ["a-1"]
    assert [(c["scan_id"], c["node"], c["reason"]) for c in detail["conflicts"]] == [
        ("b-1", "node-b", "already_used")
    ]
    assert detail["entry_count"] == 1

    status, err = await core.call(
        "POST", f"/api/v1/venues/{VENUE}/scans", {"node": "n", "items": [{"scan_id": "x"}]}
    )
    assert (status, err["error"]) == (400, "invalid_body")
    status, _ = await core.call("POST", f"/api/v1/venues/{VENUE}/scans", data=b"\x00\x01")
    assert status == 400
