"""A man in the middle on the venue network cannot inject validity changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from sync.codes import Kind, code_digest
from sync.snapshot import Record, Status
from sync.wire import ChangeBatch, RecordChanged
from tests.conftest import free_port
from tests.e2e.conftest import Site
from tests.e2e.procs import Proc, edge_proc, eventually, sell


async def forward(session: aiohttp.ClientSession, url: str,
                  request: web.Request) -> web.Response:
    """*request* passed on to *url*, and the answer back, signature header included."""
    async with session.request(request.method, url, data=await request.read(),
                               headers=dict(request.headers)) as upstream:
        return web.Response(body=await upstream.read(), status=upstream.status,
                            headers={k: v for k, v in upstream.headers.items()
                                     if k.lower() not in ("content-length", "transfer-encoding",
                                                          "content-encoding")})


@contextlib.asynccontextmanager
async def middleman(proxy: Any) -> AsyncIterator[int]:
    """*proxy* answering every path on a free port of 127.0.0.1: its port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield port
    finally:
        await runner.cleanup()


async def edge_behind(site: Site, port: int) -> Proc:
    """A node following the core through the middleman on *port*, its gate put."""
    edge = edge_proc(site.tmp, "n1", f"http://127.0.0.1:{port}", site.node_token)
    site.edges.append(edge)  # stopped with the site
    edge.start()
    await edge.wait_ready(site.http.session)
    await site.http.ok("PUT", edge.url + "/api/v1/gates/main", {"mode": "single"})
    return edge


async def test_forged_change_batch_is_refused(site: Site) -> None:
    http, core, event = site.http, site.core, site.event
    session = http.session
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
        return await forward(session, core.url + request.path_qs, request)

    async with middleman(proxy) as port:
        edge = await edge_behind(site, port)

        async def forged_seen_twice() -> bool:
            return forged_hits >= 2

        await eventually(forged_seen_twice, within_s=10)
        answer = await http.scan(edge, ticket["code"])
        assert answer["reason"] == "cancelled"
        status = await http.ok("GET", edge.url + "/api/v1/status")
        assert "signature" in status["sync"]["changes"]["last_error"]
        assert status["sync"]["cursor"] < forged_hits + 100
        assert status["sync"]["applied_changes"] == 0


async def test_a_rewritten_after_cannot_make_the_node_skip_a_change(site: Site) -> None:
    """The middleman changes nothing but the query of one poll (``after=N`` into
    ``after=N+1``) and passes the core's genuinely signed answer back. Was: the batch
    moved forward from N, so the node took it and skipped change N+1, a cancellation,
    for good. The signature now binds the request: refused, asked again, applied."""
    http, core, event = site.http, site.core, site.event
    session = http.session
    order = await sell(http, core, event, quantity=2)
    victim = order["tickets"][0]
    armed: dict[str, int] = {}
    rewritten = 0
    polls = asyncio.Event()
    polls.set()

    async def proxy(request: web.Request) -> web.StreamResponse:
        nonlocal rewritten
        path_qs = request.path_qs
        if request.path.endswith("/changes"):
            await polls.wait()
            query = dict(request.query)
            query["wait"] = "0.2"  # short polls: each new one passes here
            if armed.pop("at", None) == int(query["after"]):
                query["after"] = str(int(query["after"]) + 1)
                rewritten += 1
            path_qs = request.path + "?" + "&".join(f"{k}={v}" for k, v in query.items())
        return await forward(session, core.url + path_qs, request)

    async with middleman(proxy) as port:
        edge = await edge_behind(site, port)

        async def sync() -> Any:
            return (await http.ok("GET", edge.url + "/api/v1/status"))["sync"]

        async def caught_up() -> bool:
            state = await sync()
            return bool(state["connected"] and state["lag_changes"] == 0)

        await eventually(caught_up, 10)
        cursor = (await sync())["cursor"]
        polls.clear()  # the next poll waits in the proxy
        await asyncio.sleep(0.6)  # until the poll in flight has ended
        await http.ok("POST", f"{core.url}/api/v1/orders/{order['number']}/cancel",
                      {"tickets": [victim["id"]]})
        armed["at"] = cursor
        polls.set()

        async def past_the_cancellation() -> bool:
            return bool((await sync())["cursor"] > cursor)

        await eventually(past_the_cancellation, 15)
        assert rewritten == 1
        answer = await http.scan(edge, victim["code"])
        assert answer["reason"] == "cancelled"
