"""A man in the middle on the venue network cannot inject validity changes."""

from __future__ import annotations

import aiohttp
import msgspec
from aiohttp import web

from sync.codes import Kind, code_digest
from sync.snapshot import Record, Status
from sync.wire import ChangeBatch, RecordChanged
from tests.conftest import free_port
from tests.e2e.procs import VENUE, Http, core_proc, edge_proc, event_now_body, eventually, sell


async def test_forged_change_batch_is_refused(tmp_path):
    core = core_proc(tmp_path)
    core.start()
    runner: web.AppRunner | None = None
    edge = None
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(session)
            await core.wait_ready(session)
            event = await http.ok("POST", core.url + "/api/v1/events", event_now_body())
            token = (await http.ok("POST", f"{core.url}/api/v1/venues/{VENUE}/tokens", {}))
            order = await sell(http, core, event)
            ticket = order["tickets"][0]
            await http.ok("POST", f"{core.url}/api/v1/orders/{order['number']}/cancel", {})
            forged_hits = 0

            async def proxy(request: web.Request) -> web.StreamResponse:
                nonlocal forged_hits
                if request.path.endswith("/changes"):
                    # A batch that revives the cancelled ticket, sent with whatever
                    # signature header a real batch carried (or none at all).
                    forged_hits += 1
                    record = Record(ticket["id"], Kind.TICKET, Status.VALID, event["id"],
                                    ticket["date"], ticket["zone"], code_digest(ticket["code"]))
                    after = int(request.query.get("after", "0"))
                    batch = ChangeBatch(after + 1, [RecordChanged(after + 1, record)], False,
                                        after + 1)
                    return web.Response(body=msgspec.msgpack.encode(batch),
                                        content_type="application/msgpack",
                                        headers={"X-Gatekeeper-Signature": "1:" + "A" * 88})
                async with session.request(request.method, core.url + request.path_qs,
                                           data=await request.read(),
                                           headers=dict(request.headers)) as upstream:
                    return web.Response(body=await upstream.read(), status=upstream.status,
                                        headers={k: v for k, v in upstream.headers.items()
                                                 if k.lower() not in ("content-length",
                                                                      "transfer-encoding",
                                                                      "content-encoding")})

            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", proxy)
            runner = web.AppRunner(app)
            await runner.setup()
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            edge = edge_proc(tmp_path, "n1", f"http://127.0.0.1:{port}", token["token"])
            edge.start()
            await edge.wait_ready(session)
            await http.ok("PUT", edge.url + "/api/v1/gates/main", {"mode": "single"})

            async def forged_seen_twice() -> bool:
                return forged_hits >= 2

            await eventually(forged_seen_twice, within_s=10)
            answer = await http.scan(edge, ticket["code"])
            assert answer["reason"] == "cancelled"
            status = await http.ok("GET", edge.url + "/api/v1/status")
            assert "signature" in status["sync"]["changes"]["last_error"]
            assert status["sync"]["cursor"] < forged_hits + 100
            assert status["sync"]["applied_changes"] == 0
    finally:
        if edge is not None:
            edge.stop()
        if runner is not None:
            await runner.cleanup()
        core.stop()
