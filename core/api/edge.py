"""Routes the edge nodes use (admin token, or a node token of the venue): snapshot,
change feed (long poll), scan upload and quick cancel. Shapes: ``sync.wire``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from aiohttp import web

from core import feed, scans, stock
from core.api._http import NOTIFIER, SNAPSHOT_SLOTS, STORE, body, reply, require_venue
from core.errors import BadRequest
from core.snapshot import snapshot_chunks
from sync.wire import MAX_WAIT_S, QuickCancelRequest, ScanUpload

SNAPSHOT_HOP_BYTES: Final = 1024 * 1024
"""Bytes the snapshot thread prepares per hop to the event loop."""
POLL_FALLBACK_S: Final = 1.0
"""Long polls re-read the feed this often, for writes by other processes (jobs)."""

routes = web.RouteTableDef()


@routes.get("/api/v1/venues/{venue}/snapshot")
async def snapshot(request: web.Request) -> web.StreamResponse:
    venue = request.match_info["venue"]
    await require_venue(request, venue)
    loop = asyncio.get_running_loop()
    path = request.app[STORE].path
    async with request.app[SNAPSHOT_SLOTS]:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="core-snapshot")
        chunks = snapshot_chunks(path, venue)
        try:
            # The first hop reads the header: an unknown venue fails here, before any byte.
            piece = await loop.run_in_executor(pool, _pull, chunks)
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Disposition": 'attachment; filename="snapshot.gksnap"',
                }
            )
            await response.prepare(request)
            while piece:
                await response.write(piece)
                piece = await loop.run_in_executor(pool, _pull, chunks)
            await response.write_eof()
            return response
        finally:
            await loop.run_in_executor(pool, chunks.close)
            pool.shutdown(wait=False)


@routes.get("/api/v1/venues/{venue}/catalog")
async def catalog(request: web.Request) -> web.Response:
    venue = request.match_info["venue"]
    await require_venue(request, venue)
    store = request.app[STORE]
    venue_id = await store.read(feed.venue_id, venue)
    return reply(await store.read(feed.catalog, venue_id), request=request)


@routes.get("/api/v1/venues/{venue}/changes")
async def changes(request: web.Request) -> web.Response:
    venue = request.match_info["venue"]
    await require_venue(request, venue)
    after = _query_number(request, "after")
    if after != int(after):
        raise BadRequest("bad_query", "after must be a whole number")
    wait = min(_query_number(request, "wait"), MAX_WAIT_S)
    store = request.app[STORE]
    notifier = request.app[NOTIFIER]
    venue_id = await store.read(feed.venue_id, venue)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        # Take the wake-up event before reading, so a write in between is not missed.
        woken = notifier.next_write()
        batch = await store.read(feed.load_changes, venue_id, int(after))
        remaining = deadline - loop.time()
        if batch.changes or remaining <= 0:
            return reply(batch, request=request)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(remaining, POLL_FALLBACK_S)):
                await woken.wait()


@routes.post("/api/v1/venues/{venue}/scans")
async def upload_scans(request: web.Request) -> web.Response:
    venue = request.match_info["venue"]
    await require_venue(request, venue)
    upload = await body(request, ScanUpload)
    store = request.app[STORE]
    venue_id = await store.read(feed.venue_id, venue)
    return reply(await store.write(scans.ingest, venue_id, upload), request=request)


@routes.post("/api/v1/venues/{venue}/quick-cancel")
async def quick_cancel(request: web.Request) -> web.Response:
    venue = request.match_info["venue"]
    await require_venue(request, venue)
    data = await body(request, QuickCancelRequest)
    store = request.app[STORE]
    venue_id = await store.read(feed.venue_id, venue)
    answer = await store.write(stock.quick_cancel, data.code, venue=venue_id, scan_id=data.scan_id)
    return reply(answer, request=request)


def _pull(chunks: Iterator[bytes]) -> bytes:
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= SNAPSHOT_HOP_BYTES:
            break
    return b"".join(parts)


def _query_number(request: web.Request, name: str) -> float:
    text = request.query.get(name, "")
    try:
        value = float(text) if text else 0.0
    except ValueError:
        raise BadRequest("bad_query", f"{name} must be a number") from None
    if not 0 <= value < 2**63:
        raise BadRequest("bad_query", f"{name} must be between 0 and 2**63")
    return value
