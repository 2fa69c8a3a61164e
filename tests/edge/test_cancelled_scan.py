"""A scan whose request is cancelled while its commit is queued keeps its reservation
until the commit is done: a scan of the same ticket meanwhile must see it."""

from __future__ import annotations

import asyncio

from edge.importer import import_file
from edge.index import Index
from edge.model import GateProfile, Mode, ScanRequest
from edge.scan import ScanService
from edge.scanlog import GroupCommitter


async def test_cancelled_scan_keeps_its_reservation_until_committed(tmp_path, venue):
    code = venue.add_ticket("t")
    data = tmp_path / "node"
    import_file(data, venue.write(tmp_path / "venue.snap"))
    index = Index(data)
    committer = GroupCommitter(index, asyncio.get_running_loop())
    committer.start()
    try:
        service = ScanService(index, committer)
        await service.put_gate("main", GateProfile(Mode.SINGLE, dates=[10]))
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
        assert index.state_of(venue.ids["t"]).entries == 1
        assert not service.pending_state and not service.pending_answers
    finally:
        await committer.stop()
        index.close()
