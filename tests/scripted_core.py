"""A node's CoreClient talking to a scripted HTTP server on 127.0.0.1, for answers the
real core cannot be made to give at a chosen moment (forged, replayed, a refusal in a
race)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import unquote

from aiohttp import web

from sync.client import CoreClient
from sync.codes import ACK_DOMAIN, request_domain, sign_feed
from tests.venue import Venue


def answer_domain(request: web.Request, domain: bytes) -> bytes:
    """*domain* bound to *request* as the core binds it (``sync.codes.request_domain``):
    the route (the path's last part), the venue (the part before it) and the numbers of
    the query, in the order the core takes them."""
    *_, venue, route = request.path.split("/")
    numbers = [int(request.query[k]) for k in ("after", "upto", "cursor") if k in request.query]
    return request_domain(domain, route, unquote(venue), *numbers)


def signed_ack(venue: Venue, body: bytes, request: web.Request) -> web.Response:
    """*body* (msgpack) as the core answers an upload or a quick cancel: signed with
    the venue's key, for *request*."""
    signature = sign_feed(body, venue.key_id, venue.key,
                          domain=answer_domain(request, ACK_DOMAIN))
    return web.Response(body=body, headers={"X-Gatekeeper-Signature": signature},
                        content_type="application/msgpack")


@contextlib.asynccontextmanager
async def client_of(app: web.Application) -> AsyncIterator[CoreClient]:
    """Serve *app* on a free port of 127.0.0.1 and yield a CoreClient for it."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = CoreClient(f"http://127.0.0.1:{port}", "t", "Arena")
    await client.__aenter__()
    try:
        yield client
    finally:
        await client.close()
        await runner.cleanup()
