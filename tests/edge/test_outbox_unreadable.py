"""An unreadable scan log entry (a damaged page, a format this version does not know)
must not hold up the scans logged after it: it is kept aside in quarantine, the rest
goes up, and retention can still delete it. Before, the first such entry ended the
upload task for good (and retention failed on it at every round).

The core is a scripted HTTP server on 127.0.0.1 that acknowledges uploads like the
core, signed with the venue's key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web

from edge.follower import QUARANTINE_PREFIX, Follower
from edge.index import u64
from edge.model import Direction, Result, ScanRequest
from edge.retention import Pruner
from edge.scanlog import GroupCommitter, LogEntry, log_encoder
from sync.client import CoreClient
from sync.codes import ACK_DOMAIN, sign_feed
from sync.wire import Ack, ScanUpload, UploadResult
from tests.e2e.procs import eventually
from tests.edge.inprocess import scan_service
from tests.scripted_core import client_of
from tests.venue import Venue


@pytest.fixture
async def core(venue: Venue) -> AsyncIterator[tuple[CoreClient, list[str]]]:
    """A core that stores every uploaded scan (their scan_ids, in order)."""
    received: list[str] = []

    async def scans(request: web.Request) -> web.Response:
        upload = msgspec.msgpack.decode(await request.read(), type=ScanUpload)
        received.extend(item.scan_id for item in upload.items)
        body = msgspec.msgpack.encode(UploadResult([Ack(i.scan_id, "stored")
                                                    for i in upload.items]))
        signature = sign_feed(body, venue.key_id, venue.key, domain=ACK_DOMAIN)
        return web.Response(body=body, headers={"X-Gatekeeper-Signature": signature},
                            content_type="application/msgpack")

    app = web.Application()
    app.router.add_post("/api/v1/venues/{venue}/scans", scans)
    async with client_of(app) as client:
        yield client, received


def _put_log(seq: int, raw: bytes) -> Any:
    def op(txn: Any, committer: GroupCommitter) -> None:
        txn.put(u64(seq), raw, db=committer._index.scanlog, append=True)
        committer.next_seq = seq + 1

    return op


async def test_unreadable_entries_are_quarantined_and_the_rest_goes_up(
    tmp_path: Path, venue: Venue, core: tuple[CoreClient, list[str]]
) -> None:
    client, received = core
    codes = [venue.add_ticket(f"t{i}") for i in range(3)]
    async with scan_service(tmp_path, venue) as service:
        committer = service.committer
        assert (await service.scan(ScanRequest("s1", codes[0], "main"))).reason == "ok"
        # Seq 2: bytes that are no msgpack at all; seq 3: an entry of a newer version,
        # with a reason this one does not know.
        damaged = b"\xc1\xc1 not a log entry"
        newer = log_encoder.encode(LogEntry("s-newer", 1, Result.ACCEPTED, "teleported",
                                            Direction.ENTRY, "main", "single", 10, 1.0, 1.0))
        await committer.submit(_put_log(2, damaged))
        await committer.submit(_put_log(3, newer))
        assert (await service.scan(ScanRequest("s4", codes[1], "main"))).reason == "ok"
        assert (await service.scan(ScanRequest("s5", codes[2], "main"))).reason == "ok"

        follower = Follower(service, client, "n1")
        task = asyncio.create_task(follower._upload())
        try:
            await eventually(lambda: follower.upload_cursor() == 5, within_s=10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert received == ["s1", "s4", "s5"]
        assert follower.quarantined == 2 and follower.status(0.0)["quarantined"] == 2
        assert service.index.get_meta((QUARANTINE_PREFIX + u64(2)).decode("latin-1")) \
            == damaged
        assert service.index.get_meta((QUARANTINE_PREFIX + u64(3)).decode("latin-1")) == newer

        # Retention reads the same log: the damaged entry no longer stops it.
        pruner = Pruner(service, 1e-6, quiet_s=0.0, pause_s=0.0)
        assert await pruner.prune() == 4  # all acknowledged but the newest
        with service.index.env.begin(db=service.index.scanlog) as txn:
            assert [k for k, _v in txn.cursor()] == [u64(5)]
