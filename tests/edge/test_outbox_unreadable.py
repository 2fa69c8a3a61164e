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

from edge.follower import QUARANTINE_PREFIX, UNEXPECTED_RETRY_S, Follower
from edge.index import Index, u64
from edge.model import Direction, Result, ScanRequest
from edge.retention import Pruner
from edge.scan import ScanService
from edge.scanlog import GroupCommitter, LogEntry, log_encoder
from sync.client import CoreClient
from sync.wire import Ack, ScanUpload, UploadResult
from tests.e2e.procs import eventually
from tests.edge.inprocess import scan_service
from tests.scripted_core import client_of, signed_ack
from tests.venue import Venue


@pytest.fixture
async def core(venue: Venue) -> AsyncIterator[tuple[CoreClient, list[str]]]:
    """A core that stores every uploaded scan (their scan_ids, in order); while
    ``received`` starts with "down", it answers 503 instead."""
    received: list[str] = []

    async def scans(request: web.Request) -> web.Response:
        if received[:1] == ["down"]:
            return web.Response(status=503, text="down")
        upload = msgspec.msgpack.decode(await request.read(), type=ScanUpload)
        received.extend(item.scan_id for item in upload.items)
        return signed_ack(venue, msgspec.msgpack.encode(
            UploadResult([Ack(i.scan_id, "stored") for i in upload.items])), request)

    app = web.Application()
    app.router.add_post("/api/v1/venues/{venue}/scans", scans)
    async with client_of(app) as client:
        yield client, received


def quarantined(service: ScanService) -> dict[int, bytes]:
    return {int.from_bytes(k[len(QUARANTINE_PREFIX):], "big"): v
            for k, v in service.index.meta_prefixed(QUARANTINE_PREFIX)}


async def upload_until(follower: Follower, seq: int) -> None:
    task = asyncio.create_task(follower._upload())
    try:
        await eventually(lambda: follower.upload_cursor() == seq, within_s=10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


DAMAGED = b"\xc1\xc1 not a log entry"


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
        await upload_until(follower, 5)
        assert received == ["s1", "s4", "s5"]
        assert follower.quarantined == 2 and follower.status(0.0)["quarantined"] == 2
        assert quarantined(service) == {2: damaged, 3: newer}
        # Counted from what is stored: a restarted node shows it too.
        assert Follower(service, client, "n1").quarantined == 2

        # Retention reads the same log: the damaged entry no longer stops it.
        pruner = Pruner(service, 1e-6, quiet_s=0.0, pause_s=0.0)
        assert await pruner.prune() == 4  # all acknowledged but the newest
        with service.index.env.begin(db=service.index.scanlog) as txn:
            assert [k for k, _v in txn.cursor()] == [u64(5)]


async def test_an_unreadable_entry_is_set_aside_once_whatever_the_core_says(
    tmp_path: Path, venue: Venue, core: tuple[CoreClient, list[str]]
) -> None:
    """Behind a readable one, and while the core answers 503: quarantined once, with
    the cursor in the same commit. Was: quarantined again at every round and every
    retry (the count grew while the core was down)."""
    client, received = core
    code = venue.add_ticket("t")
    async with scan_service(tmp_path, venue) as service:
        assert (await service.scan(ScanRequest("s1", code, "main"))).reason == "ok"
        await service.committer.submit(_put_log(2, DAMAGED))
        follower = Follower(service, client, "n1")
        received.append("down")
        task = asyncio.create_task(follower._upload())
        try:
            await eventually(lambda: follower.up.failures >= 3, within_s=15)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert follower.quarantined == 0 and follower.upload_cursor() == 0  # s1 first
        received.clear()
        await upload_until(follower, 2)
        assert received == ["s1"] and follower.quarantined == 1
        assert quarantined(service) == {2: DAMAGED}


async def test_a_long_unreadable_run_is_set_aside_a_batch_at_a_time(
    tmp_path: Path, venue: Venue, core: tuple[CoreClient, list[str]]
) -> None:
    client, received = core
    code = venue.add_ticket("t")
    async with scan_service(tmp_path, venue) as service:
        for seq in range(1, 8):
            await service.committer.submit(_put_log(seq, DAMAGED))
        assert (await service.scan(ScanRequest("s8", code, "main"))).reason == "ok"
        follower = Follower(service, client, "n1")
        unreadable: list[tuple[int, bytes]] = []
        assert follower.read_outbox(0, 3, unreadable) == []
        assert [seq for seq, _raw in unreadable] == [1, 2, 3]  # bounded by the limit
        await upload_until(follower, 8)
        assert received == ["s8"] and sorted(quarantined(service)) == list(range(1, 8))


async def test_a_snapshot_this_node_cannot_read_is_retried_slowly_not_given_up(
    tmp_path: Path,
) -> None:
    """A core that serves a snapshot of a format this version does not know. Was: the
    follow task died at once, silently (no more feed until a restart); then, with a
    catch-all on the transport backoff, it downloaded the whole snapshot again about
    every half second. Now it shows the failure and waits 5 s, doubling."""
    downloads: list[float] = []

    async def snapshot(request: web.Request) -> web.Response:
        downloads.append(asyncio.get_running_loop().time())
        return web.Response(body=b"GKSNAP9" + bytes(1 << 16),
                            headers={"X-Gatekeeper-Cursor": "7"})

    app = web.Application()
    app.router.add_get("/api/v1/venues/{venue}/snapshot", snapshot)
    async with client_of(app) as client:
        index = Index(tmp_path / "n")
        committer = GroupCommitter(index, asyncio.get_running_loop())
        committer.start()
        try:
            follower = Follower(ScanService(index, committer), client, "n1")
            task = asyncio.create_task(follower._follow())
            await eventually(lambda: follower.down.failures >= 1, within_s=10)
            await asyncio.sleep(UNEXPECTED_RETRY_S / 2)
            assert not task.done()  # still following
            assert len(downloads) == 1
            assert "internal error" in follower.down.last_error
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            await committer.stop()
            index.close()


async def test_quarantined_entries_a_newer_version_can_read_go_up_at_start(
    tmp_path: Path, venue: Venue, core: tuple[CoreClient, list[str]]
) -> None:
    """Quarantined by an older version (a downgrade, then the upgrade back): once this
    version can read them, they go up at start and leave quarantine; the rest stay."""
    client, received = core
    readable = log_encoder.encode(LogEntry("s-old", 1, Result.ACCEPTED,
                                           "ok", Direction.ENTRY, "main", "single", 10,
                                           1.0, 1.0))
    async with scan_service(tmp_path, venue) as service:
        meta = service.index.meta

        def op(txn: Any, _c: GroupCommitter) -> None:
            txn.put(QUARANTINE_PREFIX + u64(42), readable, db=meta)
            txn.put(QUARANTINE_PREFIX + u64(43), DAMAGED, db=meta)

        await service.committer.submit(op)
        follower = Follower(service, client, "n1")
        assert follower.quarantined == 2
        task = asyncio.create_task(follower._upload())
        try:
            await eventually(lambda: received == ["s-old"], within_s=10)
            await eventually(lambda: follower.quarantined == 1, within_s=10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert quarantined(service) == {43: DAMAGED}
