"""A scan whose request is cancelled while its commit is queued keeps its reservation
until the commit is done: a scan of the same ticket meanwhile must see it."""

from __future__ import annotations

import asyncio

from edge.model import ScanRequest
from tests.edge.inprocess import scan_service


async def test_cancelled_scan_keeps_its_reservation_until_committed(tmp_path, venue):
    code = venue.add_ticket("t")
    async with scan_service(tmp_path, venue) as service:
        first = asyncio.create_task(service.scan(ScanRequest("a", code, "main")))
        for _ in range(10):  # until it is decided, reserved, waiting for its commit
            await asyncio.sleep(0)
            if service.pending_state:
                break
        assert service.pending_state
        first.cancel()
        await asyncio.sleep(0)
        second = await service.scan(ScanRequest("b", code, "main"))
        assert second.reason == "already_used"
        try:
            await first
        except asyncio.CancelledError:
            pass
        # Whatever the first request's fate, its scan is on disk and counted once.
        assert service.state_of(venue.ids["t"]).entries == 1
        assert not service.pending_state and not service.pending_answers
