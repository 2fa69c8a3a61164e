"""POST /api/v1/scans/batch: offline scans, answered in input order, decided in
scanned_at order."""

from __future__ import annotations

from tests.venue import HOUR


async def batch(node, scans, **kw):
    return await node.call("POST", "/api/v1/scans/batch", {"scans": scans}, **kw)


async def test_entry_exit_sent_out_of_order(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("door", mode="entry_exit", dates=[10])
    t1 = venue.now - 10 * 60
    t2 = venue.now - 5 * 60
    status, body = await batch(node, [
        {"scan_id": "out", "code": code, "gate": "door", "direction": "exit", "scanned_at": t2},
        {"scan_id": "in", "code": code, "gate": "door", "direction": "entry", "scanned_at": t1},
    ])
    assert status == 200
    results = body["results"]
    assert [r["scan_id"] for r in results] == ["out", "in"]
    assert [(r["result"], r["reason"]) for r in results] == [
        ("accepted", "exit_ok"), ("accepted", "ok")]
    # After both, the holder is outside: the next auto scan is an entry.
    assert (await node.scan(code, gate="door"))["reason"] == "ok"


async def test_auto_direction_follows_scanned_at(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("door", mode="entry_exit", dates=[10])
    base = venue.now - 30 * 60
    scans = [{"scan_id": f"a{i}", "code": code, "gate": "door", "scanned_at": base + i}
             for i in (3, 0, 2, 1)]
    status, body = await batch(node, scans)
    assert status == 200
    got = {r["scan_id"]: (r["reason"], r["direction"]) for r in body["results"]}
    assert got == {"a0": ("ok", "entry"), "a1": ("exit_ok", "exit"),
                   "a2": ("ok", "entry"), "a3": ("exit_ok", "exit")}
    assert [r["scan_id"] for r in body["results"]] == ["a3", "a0", "a2", "a1"]


async def test_single_mode_earliest_scan_wins(edge, venue):
    code = venue.add_ticket("t")
    other = venue.add_ticket("u")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    status, body = await batch(node, [
        {"scan_id": "late", "code": code, "gate": "main", "scanned_at": venue.now - 60},
        {"scan_id": "bad", "code": "nope", "gate": "main", "scanned_at": venue.now - 90},
        {"scan_id": "u", "code": other, "gate": "main", "scanned_at": venue.now - 30},
        {"scan_id": "early", "code": code, "gate": "main", "scanned_at": venue.now - 120},
    ])
    assert status == 200
    assert [(r["scan_id"], r["reason"]) for r in body["results"]] == [
        ("late", "already_used"), ("bad", "unknown"), ("u", "ok"), ("early", "ok")]


async def test_offline_scan_judged_at_its_own_time(edge, venue):
    """Yesterday's ticket, scanned yesterday during its show: admitted; now: too late."""
    code = venue.add_ticket("y", date=12)
    late = venue.add_ticket("y2", date=12)
    node = await edge.start()
    await node.gate("old", mode="single", dates=[12])
    status, body = await batch(node, [
        {"scan_id": "b1", "code": code, "gate": "old", "scanned_at": venue.date(12).start},
        {"scan_id": "b2", "code": late, "gate": "old"},
    ])
    assert status == 200
    assert [r["reason"] for r in body["results"]] == ["ok", "too_late"]


async def test_far_future_device_clock_is_clamped(edge, venue):
    """A device clock a day ahead cannot make tomorrow's ticket valid today."""
    code = venue.add_ticket("tomorrow", date=11)
    node = await edge.start()
    await node.gate("all", mode="single", events=[1])
    status, body = await batch(node, [
        {"scan_id": "f", "code": code, "gate": "all", "scanned_at": venue.date(11).start},
    ])
    assert status == 200
    assert body["results"][0]["reason"] == "too_early"


async def test_batch_is_idempotent_and_shares_scan_ids_with_single_scans(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    first = await node.scan(code, scan_id="live-1")
    scans = [
        {"scan_id": "live-1", "code": code, "gate": "main", "scanned_at": venue.now - 5},
        {"scan_id": "off-1", "code": code, "gate": "main", "scanned_at": venue.now - 5},
    ]
    status, body = await batch(node, scans)
    assert status == 200
    assert body["results"][0] == first
    assert body["results"][1]["reason"] == "already_used"
    status, again = await batch(node, scans)
    assert again == body
    status, info = await node.call("GET", "/api/v1/status")
    assert info["scans"]["logged"] == 2


async def test_duplicate_scan_id_inside_one_batch(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    scan = {"scan_id": "twice", "code": code, "gate": "main", "scanned_at": venue.now - 5}
    status, body = await batch(node, [scan, scan])
    assert status == 200
    assert body["results"][0] == body["results"][1]
    assert body["results"][0]["reason"] == "ok"
    status, info = await node.call("GET", "/api/v1/status")
    assert info["scans"]["logged"] == 1


async def test_empty_batch(edge, venue):
    node = await edge.start()
    status, body = await batch(node, [])
    assert (status, body) == (200, {"results": []})


async def test_batch_size_cap(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    scans = [{"scan_id": f"b{i}", "code": "x", "gate": "main"} for i in range(1001)]
    status, body = await batch(node, scans)
    assert status == 400
    assert set(body) == {"error", "message"}
    # Nothing of a refused batch was decided.
    assert (await node.scan(code))["reason"] == "ok"
    status, info = await node.call("GET", "/api/v1/status")
    assert info["scans"]["logged"] == 1


async def test_batch_of_a_thousand_is_accepted(edge, venue):
    codes = [venue.add_ticket(f"t{i}") for i in range(10)]
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    scans = [{"scan_id": f"k{i}", "code": codes[i % 10], "gate": "main",
              "scanned_at": venue.now - 1000 + i} for i in range(1000)]
    status, body = await batch(node, scans)
    assert status == 200
    reasons = [r["reason"] for r in body["results"]]
    assert reasons[:10] == ["ok"] * 10
    assert reasons[10:] == ["already_used"] * 990


async def test_batch_with_an_unknown_gate_decides_nothing(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    status, body = await batch(node, [
        {"scan_id": "g1", "code": code, "gate": "main"},
        {"scan_id": "g2", "code": code, "gate": "nowhere"},
    ])
    assert status == 404 and body["error"] == "unknown_gate"
    assert (await node.scan(code, scan_id="g1"))["reason"] == "ok"


async def test_batch_per_day_limit_in_time_order(edge, venue):
    """Pass with one event per day: the earlier of two same-day scans wins."""
    code = venue.add_pass("p", 503)
    node = await edge.start()
    await node.gate("concert", mode="single", dates=[10])
    await node.gate("play", mode="single", dates=[20])
    status, body = await batch(node, [
        {"scan_id": "c", "code": code, "gate": "concert", "scanned_at": venue.now - 60},
        {"scan_id": "p", "code": code, "gate": "play", "scanned_at": venue.now - HOUR / 2},
    ])
    assert status == 200
    assert [r["reason"] for r in body["results"]] == ["limit_reached", "ok"]
