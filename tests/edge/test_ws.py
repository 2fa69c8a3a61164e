"""GET /api/v1/ws: the scan API over one WebSocket for high-rate devices."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec

from tests.conftest import TOKEN

TIMEOUT_S = 5.0


async def connect(node, **headers):
    return await node.session.ws_connect(
        node.url + "/api/v1/ws", headers={"Authorization": f"Bearer {TOKEN}", **headers}
    )


async def receive(ws) -> dict:
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT_S)
    assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
    return msgspec.json.decode(msg.data)


async def test_several_scans_answered_by_scan_id(edge, venue):
    codes = [venue.add_ticket(f"t{i}") for i in range(5)]
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    async with await connect(node) as ws:
        for i, code in enumerate(codes):
            await ws.send_str(msgspec.json.encode(
                {"scan_id": f"w{i}", "code": code, "gate": "main"}).decode())
        got = {}
        for _ in range(5):
            answer = await receive(ws)
            got[answer["scan_id"]] = answer
        await ws.send_str(msgspec.json.encode(
            {"scan_id": "w-again", "code": codes[0], "gate": "main"}).decode())
        again = await receive(ws)
        await ws.send_str(msgspec.json.encode(
            {"scan_id": "w0", "code": codes[0], "gate": "main"}).decode())
        retry = await receive(ws)
    assert {k: v["reason"] for k, v in got.items()} == {f"w{i}": "ok" for i in range(5)}
    for i in range(5):
        assert got[f"w{i}"]["ticket"]["id"] == venue.ids[f"t{i}"]
    assert got["w0"]["message"] and got["w0"]["direction"] == "entry"
    assert (again["scan_id"], again["reason"]) == ("w-again", "already_used")
    assert retry == got["w0"]


async def test_garbage_frame_gets_an_error_and_the_connection_keeps_working(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    async with await connect(node) as ws:
        for garbage in ("not json", "{}", '{"scan_id": 1}', "[]"):
            await ws.send_str(garbage)
            error = await receive(ws)
            assert set(error) >= {"error", "message"}, error
            assert "reason" not in error
        await ws.send_bytes(b"\xff\xfe\x00garbage")
        assert "error" in await receive(ws)
        # Invalid UTF-8 inside a JSON string, in a binary frame.
        await ws.send_bytes(b'{"scan_id": "\xff", "code": "x", "gate": "main"}')
        assert "error" in await receive(ws)
        await ws.send_str(msgspec.json.encode(
            {"scan_id": "after", "code": code, "gate": "main"}).decode())
        answer = await receive(ws)
    assert (answer["scan_id"], answer["reason"]) == ("after", "ok")


async def test_unknown_gate_and_malformed_code_over_ws(edge, venue):
    venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    async with await connect(node) as ws:
        await ws.send_str('{"scan_id": "g", "code": "x", "gate": "nowhere"}')
        error = await receive(ws)
        assert (error["error"], error["scan_id"]) == ("unknown_gate", "g")
        await ws.send_bytes(b'{"scan_id": "m", "code": "\\u0000", "gate": "main"}')
        answer = await receive(ws)
        assert (answer["scan_id"], answer["reason"]) == ("m", "malformed")


async def test_ws_same_scan_id_as_http_gets_same_answer(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    first = await node.scan(code, scan_id="shared")
    async with await connect(node, **{"Accept-Language": "en"}) as ws:
        await ws.send_str(msgspec.json.encode(
            {"scan_id": "shared", "code": code, "gate": "main"}).decode())
        assert await receive(ws) == first


async def test_ws_needs_the_token(edge, venue):
    node = await edge.start()
    async with node.session.get(node.url + "/api/v1/ws") as resp:
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthorized"


async def test_ws_concurrent_scans_of_one_ticket(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    async with await connect(node) as ws:
        for i in range(30):
            await ws.send_str(msgspec.json.encode(
                {"scan_id": f"c{i}", "code": code, "gate": "main"}).decode())
        reasons = [(await receive(ws))["reason"] for _ in range(30)]
    assert reasons.count("ok") == 1
    assert reasons.count("already_used") == 29
