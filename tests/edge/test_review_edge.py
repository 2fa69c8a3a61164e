"""Regressions found in review of the edge node and its sync (see commit messages)."""

from __future__ import annotations

import asyncio


async def test_scan_id_too_long_for_lmdb_is_refused_and_does_not_fail_other_scans(edge, venue):
    # 128 characters pass the length cap, but 512 UTF-8 bytes exceed LMDB's key size: the
    # put failed inside the shared group commit and every scan merged with it got a 503.
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    fat = "\U0001f600" * 128
    body = {"scan_id": fat, "code": code, "gate": "main"}
    results = await asyncio.gather(
        node.call("POST", "/api/v1/scans", body),
        node.call("POST", "/api/v1/scans", {"scan_id": "ok-1", "code": code, "gate": "main"}),
    )
    assert results[0][0] == 400, results[0]
    assert results[1][0] == 200 and results[1][1]["reason"] == "ok", results[1]
    status, answer = await node.call("POST", "/api/v1/quick-cancel",
                                     {"scan_id": fat, "code": code})
    assert status == 400, answer
    status, answer = await node.call("POST", "/api/v1/scans/batch", {"scans": [body]})
    assert status == 400, answer


async def test_ws_scan_id_too_long_for_lmdb_gets_an_error_message(edge, venue):
    from tests.edge.test_ws import connect, receive

    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    async with await connect(node) as ws:
        await ws.send_json({"scan_id": "\U0001f600" * 128, "code": code, "gate": "main"})
        assert (await receive(ws))["error"] == "invalid"
        await ws.send_json({"scan_id": "w1", "code": code, "gate": "main"})
        assert (await receive(ws))["reason"] == "ok"


