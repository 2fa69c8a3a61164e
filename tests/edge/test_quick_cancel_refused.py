"""A quick cancel the core refuses is undone at the node.

The node cancels stock at once and tells the core later. If the core refuses (the box
office sold that ticket meanwhile), the node used to keep its cancelled record until the
core changed the record again: the customer was refused at this node alone.

The core here is a scripted HTTP server on 127.0.0.1 that signs its answers like the
core: the real core cannot be made to sell a ticket between the node's quick cancel and
its upload deterministically. The accepted path runs against the real core in
``tests/e2e/test_sync.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from aiohttp import web

from edge.follower import Follower
from edge.index import u64
from edge.model import ScanRequest
from edge.scan import QUICK_CANCEL_BEFORE, ScanService
from edge.scanlog import MAX_COMMIT_INTERVAL_S
from sync.client import CoreClient
from sync.codes import code_digest
from sync.snapshot import Channel, Record, Status
from sync.wire import ChangeBatch, QuickCancelAnswer, RecordChanged
from tests.edge.inprocess import scan_service
from tests.scripted_core import client_of, signed_ack
from tests.venue import Venue


@pytest.fixture
async def core(venue: Venue) -> AsyncIterator[tuple[CoreClient, list[str]]]:
    """A core that answers every quick cancel with the next result of its list
    (``result/reason``, or an HTTP status), signed with the venue's key."""
    script: list[str] = []

    async def quick_cancel(request: web.Request) -> web.Response:
        scan_id = msgspec.msgpack.decode(await request.read())["scan_id"]
        step = script.pop(0)
        if step.isdigit():
            return web.Response(status=int(step), text="refused")
        result, reason = step.split("/")
        body = msgspec.msgpack.encode(QuickCancelAnswer(scan_id, result, reason))  # type: ignore[arg-type]
        return signed_ack(venue, body, request)

    app = web.Application()
    app.router.add_post("/api/v1/venues/{venue}/quick-cancel", quick_cancel)
    async with client_of(app) as client:
        yield client, script


def _version(venue: Venue, name: str, **changes: object) -> Record:
    """The core's next version of *name*'s record."""
    record = next(r for r in venue.records if r.id == venue.ids[name])
    return msgspec.structs.replace(record, **changes)


def _batch(service: ScanService, *records: Record) -> ChangeBatch:
    """The feed's next batch, carrying *records*."""
    cursor = service.cursor() + 1
    return ChangeBatch(cursor, [RecordChanged(cursor, r) for r in records], head=cursor)


async def _reason(service: ScanService, scan_id: str, code: str) -> str:
    return str((await service.scan(ScanRequest(scan_id, code, "main"))).reason)


async def _upload(follower: Follower) -> None:
    """Send the quick cancels of the outbox (the scripted core takes no scans)."""
    entries = follower.read_outbox(0, 100)
    await follower._send([(seq, e) for seq, e in entries if e.kind == "quick_cancel"])


def _before_keys(service: ScanService) -> list[bytes]:
    return [k for k, _v in service.index.meta_prefixed(QUICK_CANCEL_BEFORE)]


async def test_refused_quick_cancels_are_undone_unless_cancelled_there_too(
    tmp_path: Path, venue: Venue, core: tuple[CoreClient, list[str]]
) -> None:
    client, script = core
    codes = [venue.add_ticket(f"stock{i}", channel=Channel.BOX_OFFICE, sold=False)
             for i in range(4)]
    async with scan_service(tmp_path, venue) as service:
        follower = Follower(service, client, "n1")
        for i, code in enumerate(codes):
            assert (await service.quick_cancel(f"qc-{i}", code)).result == "accepted"
        # Kept on disk with the quick cancel (a restart before the core answers loses
        # nothing) until the core answers.
        assert len(_before_keys(service)) == 4
        script += ["rejected/sold", "rejected/cancelled", "accepted/ok", "422"]
        await _upload(follower)
        assert await _reason(service, "s0", codes[0]) == "ok"  # sold there: valid again
        assert await _reason(service, "s1", codes[1]) == "cancelled"  # cancelled there too
        assert await _reason(service, "s2", codes[2]) == "cancelled"  # the core agreed
        # Refused as a bad request, unsigned: the core never looked at the ticket, and
        # anyone on the path could send a 4xx. The cancel stands.
        assert await _reason(service, "s3", codes[3]) == "cancelled"
        assert _before_keys(service) == []
        assert script == []
        assert follower.refused == {"quick_cancel_sold": 1, "quick_cancel_cancelled": 1,
                                    "quick_cancel_422": 1}
        # The same entries again (an upload retried after a failure): nothing changes.
        script += ["rejected/sold", "rejected/cancelled", "accepted/ok", "422"]
        await _upload(follower)
        assert [await _reason(service, f"t{i}", c) for i, c in enumerate(codes)] == [
            "already_used", "cancelled", "cancelled", "cancelled"]  # s0 entered above


async def test_a_newer_version_from_the_feed_is_not_undone(
    tmp_path: Path, venue: Venue, core: tuple[CoreClient, list[str]]
) -> None:
    client, script = core
    code = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    async with scan_service(tmp_path, venue) as service:
        follower = Follower(service, client, "n1")
        assert (await service.quick_cancel("qc-1", code)).result == "accepted"
        # The core's feed already sent its own version (sold, with the buyer's name).
        sold = _version(venue, "stock", sold=True, holder="Buyer")
        await follower.apply(_batch(service, sold))
        script.append("rejected/sold")
        await _upload(follower)
        with service.index.env.begin() as txn:
            raw = txn.get(u64(sold.id), db=service.index.records)
        assert msgspec.msgpack.decode(raw, type=Record) == sold
        assert await _reason(service, "s1", code) == "ok"
        assert _before_keys(service) == []


async def test_a_quick_cancel_decides_on_a_feed_version_still_being_written(
    tmp_path: Path, venue: Venue
) -> None:
    """The feed's records count from the moment they are queued for the writer: a quick
    cancel in between used to read the older (unsold) version, cancel a customer's
    ticket, and overwrite the feed's version with it."""
    code = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    # The quick cancel decides in the same loop round in which the feed's batch is
    # handed to the writer; the commit interval only widens the margin.
    async with scan_service(tmp_path, venue, interval_s=MAX_COMMIT_INTERVAL_S) as service:
        follower = Follower(service, None, "n1")  # type: ignore[arg-type]  # no core calls
        applying = asyncio.ensure_future(
            follower.apply(_batch(service, _version(venue, "stock", sold=True))))
        await asyncio.sleep(0)  # the batch is handed to the writer, not yet committed
        assert not applying.done()
        answer = await service.quick_cancel("qc-1", code)
        assert (answer.result, answer.reason) == ("rejected", "sold")
        await applying
        assert await _reason(service, "s1", code) == "ok"


async def test_a_replaced_code_does_not_borrow_the_queued_new_version(
    tmp_path: Path, venue: Venue
) -> None:
    """While the feed's reissue of a ticket waits for the writer, its old code still
    maps to the ticket on disk: it must not be decided against the new, valid version
    (a review found the old code admitted in that window)."""
    old = venue.add_ticket("t", plain="OLDCODE1", status=Status.CANCELLED,
                           channel=Channel.BOX_OFFICE, sold=True)
    async with scan_service(tmp_path, venue) as service:
        follower = Follower(service, None, "n1")  # type: ignore[arg-type]  # no core calls
        reissued = _version(venue, "t", status=Status.VALID,
                            code_digest=code_digest("NEWCODE1"))
        applying = asyncio.ensure_future(follower.apply(_batch(service, reissued)))
        await asyncio.sleep(0)
        assert not applying.done()
        assert await _reason(service, "s1", old) == "unknown"
        await applying
        assert await _reason(service, "s2", old) == "unknown"
        assert await _reason(service, "s3", "NEWCODE1") == "ok"
