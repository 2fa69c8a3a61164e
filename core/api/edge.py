"""Routes the edge nodes use (admin token, or a node token of the venue): snapshot and
its signed digest, change feed (long poll), catalogue, scan upload and quick cancel.
Shapes: ``sync.wire``.

Every JSON or msgpack answer here carries ``X-Gatekeeper-Signature`` over its exact body
bytes (``sync.codes.sign_feed``): ``FEED_DOMAIN`` for changes and the catalogue,
``SNAPSHOT_DOMAIN`` for a snapshot's digest, ``ACK_DOMAIN`` for upload and quick-cancel
answers, each bound to the request it answers (``sync.codes.request_domain``: route,
venue, ``after``/``upto``/``cursor``). The snapshot stream itself is not signed (it is
long and streamed): it is sent with ``X-Gatekeeper-Cursor``, and the node checks its
SHA-256 against the signed ``snapshot-digest?cursor=N`` answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from aiohttp import web

from core import feed, keys, scans, stock
from core.api._http import (
    NOTIFIER,
    SNAPSHOT_DIGESTS,
    SNAPSHOT_SLOTS,
    STORE,
    body,
    reply,
    require_venue,
    signed,
)
from core.errors import BadRequest, NotFound
from core.snapshot import SnapshotStream
from core.store import Tx
from sync.codes import ACK_DOMAIN, FEED_DOMAIN, SNAPSHOT_DOMAIN, request_domain
from sync.snapshot import Catalog
from sync.wire import MAX_WAIT_S, ChangeBatch, QuickCancelRequest, ScanUpload

SNAPSHOT_HOP_BYTES: Final = 1024 * 1024
"""Bytes the snapshot thread prepares per hop to the event loop."""
POLL_FALLBACK_S: Final = 1.0
"""Long polls re-read the feed this often, for writes by other processes (jobs)."""
CURSOR_HEADER: Final = "X-Gatekeeper-Cursor"

routes = web.RouteTableDef()


@routes.get("/api/v1/venues/{venue}/snapshot")
async def snapshot(request: web.Request) -> web.StreamResponse:
    venue = request.match_info["venue"]
    await require_venue(request, venue)
    loop = asyncio.get_running_loop()
    path = request.app[STORE].path
    async with request.app[SNAPSHOT_SLOTS]:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="core-snapshot")
        stream: SnapshotStream | None = None
        try:
            # Opening reads the header: an unknown venue fails here, before any byte.
            stream = await loop.run_in_executor(pool, SnapshotStream, path, venue)
            chunks = iter(stream)
            digest = hashlib.sha256()
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Disposition": 'attachment; filename="snapshot.gksnap"',
                    CURSOR_HEADER: str(stream.header.cursor),
                }
            )
            await response.prepare(request)
            while piece := await loop.run_in_executor(pool, _pull, chunks, digest.update):
                await response.write(piece)
            # Known before the last byte leaves, so a node that read it all finds it.
            request.app[SNAPSHOT_DIGESTS].put(
                venue, stream.header.cursor, digest.hexdigest(), time.monotonic()
            )
            await response.write_eof()
            return response
        finally:
            if stream is not None:
                await loop.run_in_executor(pool, stream.close)
            pool.shutdown(wait=False)


@routes.get("/api/v1/venues/{venue}/snapshot-digest")
async def snapshot_digest(request: web.Request) -> web.Response:
    """``{cursor, sha256}`` of the snapshot served lately at *cursor*, signed."""
    venue = request.match_info["venue"]
    await require_venue(request, venue)
    cursor = _query_number(request, "cursor")
    if cursor != int(cursor):
        raise BadRequest("bad_query", "cursor must be a whole number")
    store = request.app[STORE]
    await store.read(feed.venue_id, venue)
    found = request.app[SNAPSHOT_DIGESTS].get(venue, int(cursor), time.monotonic())
    if found is None:
        raise NotFound(
            "snapshot_digest_unknown",
            f"no snapshot of {venue!r} at cursor {int(cursor)} was served lately; download again",
        )
    signer = await store.read(keys.feed_signer)
    answer = {"cursor": int(cursor), "sha256": found}
    return _answer(request, answer, signer, SNAPSHOT_DOMAIN, int(cursor))


@routes.get("/api/v1/venues/{venue}/catalog")
async def catalog(request: web.Request) -> web.Response:
    venue = request.match_info["venue"]
    await require_venue(request, venue)
    store = request.app[STORE]
    venue_id = await store.read(feed.venue_id, venue)
    found, signer = await store.read(_catalog_signed, venue_id)
    return _answer(request, found, signer, FEED_DOMAIN)


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
        batch, signer = await store.read(_changes_signed, venue_id, int(after))
        remaining = deadline - loop.time()
        if batch.changes or batch.cursor != int(after) or remaining <= 0:
            return _answer(request, batch, signer, FEED_DOMAIN, int(after))
        await notifier.wait(woken, min(remaining, POLL_FALLBACK_S))


@routes.get("/api/v1/venues/{venue}/admissions")
async def admissions(request: web.Request) -> web.Response:
    """Admitted scans with ``after < seq <= upto`` (signed like the feed): what a node
    replays after a snapshot, which carries records but no scan state."""
    venue = request.match_info["venue"]
    await require_venue(request, venue)
    after = _query_number(request, "after")
    upto = _query_number(request, "upto")
    if after != int(after) or upto != int(upto):
        raise BadRequest("bad_query", "after and upto must be whole numbers")
    store = request.app[STORE]
    venue_id = await store.read(feed.venue_id, venue)
    batch, signer = await store.read(_admissions_signed, venue_id, int(after), int(upto))
    return _answer(request, batch, signer, FEED_DOMAIN, int(after), int(upto))


@routes.post("/api/v1/venues/{venue}/scans")
async def upload_scans(request: web.Request) -> web.Response:
    venue = request.match_info["venue"]
    await require_venue(request, venue)
    upload = await body(request, ScanUpload)
    store = request.app[STORE]
    venue_id = await store.read(feed.venue_id, venue)
    result = await store.write(scans.ingest, venue_id, upload)
    signer = await store.read(keys.feed_signer)
    return _answer(request, result, signer, ACK_DOMAIN)


@routes.post("/api/v1/venues/{venue}/quick-cancel")
async def quick_cancel(request: web.Request) -> web.Response:
    venue = request.match_info["venue"]
    await require_venue(request, venue)
    data = await body(request, QuickCancelRequest)
    store = request.app[STORE]
    venue_id = await store.read(feed.venue_id, venue)
    answer = await store.write(stock.quick_cancel, data.code, venue=venue_id, scan_id=data.scan_id)
    signer = await store.read(keys.feed_signer)
    return _answer(request, answer, signer, ACK_DOMAIN)


def _answer(request: web.Request, payload: object, signer: keys.FeedSigner, domain: bytes,
            *numbers: int) -> web.Response:
    """*payload* signed under *domain* bound to *request* (``request_domain``): its
    route (the last part of its path), its venue and *numbers*, as the node verifies."""
    route = request.path.rsplit("/", 1)[1]
    return signed(reply(payload, request=request), signer,
                  request_domain(domain, route, request.match_info["venue"], *numbers))


def _changes_signed(tx: Tx, venue_id: int, after: int) -> tuple[ChangeBatch, keys.FeedSigner]:
    return feed.load_changes(tx, venue_id, after), keys.feed_signer(tx)


def _admissions_signed(
    tx: Tx, venue_id: int, after: int, upto: int
) -> tuple[ChangeBatch, keys.FeedSigner]:
    return feed.load_admissions(tx, venue_id, after, upto), keys.feed_signer(tx)


def _catalog_signed(tx: Tx, venue_id: int) -> tuple[Catalog, keys.FeedSigner]:
    return feed.catalog(tx, venue_id), keys.feed_signer(tx)


def _pull(chunks: Iterator[bytes], digest: Callable[[bytes], object]) -> bytes:
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= SNAPSHOT_HOP_BYTES:
            break
    piece = b"".join(parts)
    digest(piece)
    return piece


def _query_number(request: web.Request, name: str) -> float:
    text = request.query.get(name, "")
    try:
        value = float(text) if text else 0.0
    except ValueError:
        raise BadRequest("bad_query", f"{name} must be a number") from None
    if not 0 <= value < 2**63:
        raise BadRequest("bad_query", f"{name} must be between 0 and 2**63")
    return value
