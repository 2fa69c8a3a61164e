"""A quick cancel holds over the core's feed until the core has decided on it.

Between this node's quick cancel and the core's own cancellation coming back through the
feed, a feed change made at the core before it knew (an older version of the record)
used to make the cancelled stock valid again for that time.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from edge.follower import Follower
from edge.model import ScanRequest
from edge.scan import ScanService
from edge.scanlog import CommitFailed
from sync.snapshot import Channel, Record, Status
from sync.wire import ChangeBatch, RecordChanged
from tests.edge.inprocess import scan_service
from tests.venue import Venue


def _record(venue: Venue, name: str, **changes: object) -> Record:
    record = next(r for r in venue.records if r.id == venue.ids[name])
    return msgspec.structs.replace(record, **changes)


async def _feed(follower: Follower, service: ScanService, *records: Record) -> None:
    cursor = service.cursor() + 1
    await follower.apply(
        ChangeBatch(cursor, [RecordChanged(cursor, r) for r in records], head=cursor)
    )


async def _reason(service: ScanService, scan_id: str, code: str) -> str:
    return str((await service.scan(ScanRequest(scan_id, code, "main"))).reason)


async def test_older_feed_versions_do_not_revive_quick_cancelled_stock(
    tmp_path: Path, venue: Venue
) -> None:
    stock = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    async with scan_service(tmp_path, venue) as service:
        follower = Follower(service, None, "n1")  # type: ignore[arg-type]  # no core calls
        answer = await service.quick_cancel("qc-1", stock)
        assert (answer.result, answer.reason) == ("accepted", "ok")
        # The core changed the record before it had the quick cancel (a new holder
        # name on the printed ticket): still cancelled here.
        await _feed(follower, service, _record(venue, "stock", holder="Box Office 2"))
        assert await _reason(service, "s1", stock) == "cancelled"
        # The core's cancellation confirms it and ends the hold: the core's word counts
        # again for later changes.
        await _feed(follower, service, _record(venue, "stock", status=Status.CANCELLED))
        assert service.held == {}
        await _feed(follower, service, _record(venue, "stock", holder="Reinstated"))
        assert await _reason(service, "s2", stock) == "ok"


async def test_a_quick_cancel_the_core_refuses_gives_back_the_cores_record(
    tmp_path: Path, venue: Venue
) -> None:
    sold = venue.add_ticket("sold-there", channel=Channel.BOX_OFFICE, sold=False)
    other = venue.add_ticket("cancelled-there", channel=Channel.BOX_OFFICE, sold=False)
    async with scan_service(tmp_path, venue) as service:
        follower = Follower(service, None, "n1")  # type: ignore[arg-type]  # no core calls
        for code, scan_id in ((sold, "qc-1"), (other, "qc-2")):
            assert (await service.quick_cancel(scan_id, code)).result == "accepted"
        # Meanwhile the box office sold one at the core; the feed says so.
        await _feed(follower, service, _record(venue, "sold-there", sold=True),
                    _record(venue, "cancelled-there", holder="x"))
        assert await _reason(service, "s1", sold) == "cancelled"
        # The core refuses the quick cancel (what the upload task hears back): the
        # customer's ticket is valid again here.
        await follower._quick_cancel_refused(venue.ids["sold-there"], "sold")
        assert await _reason(service, "s2", sold) == "ok"
        # Refused because the core had cancelled it already: it stays cancelled.
        await follower._quick_cancel_refused(venue.ids["cancelled-there"], "cancelled")
        assert await _reason(service, "s3", other) == "cancelled"
        assert service.held == {}


async def test_a_failed_quick_cancel_commit_holds_nothing(tmp_path: Path, venue: Venue) -> None:
    stock = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    async with scan_service(tmp_path, venue) as service:
        await service.committer.stop()  # the disk is gone: every write fails
        with pytest.raises(CommitFailed, match="not accepting writes"):
            await service.quick_cancel("qc-1", stock)
        assert service.held == {}
