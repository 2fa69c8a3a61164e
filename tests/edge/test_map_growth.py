"""The LMDB map grows when it fills: at import, and under scans on a running node."""

from __future__ import annotations

import asyncio

from edge.importer import import_file
from edge.index import Index
from edge.model import GateProfile, Mode, ScanRequest
from edge.scan import ScanService
from edge.scanlog import GroupCommitter

SMALL_MAP = 64 * 1024


async def test_map_grows_at_import_and_while_scanning(tmp_path, venue):
    codes = [venue.add_ticket(f"t{i}", holder=f"Holder Number{i}") for i in range(400)]
    data = tmp_path / "node"
    report = import_file(data, venue.write(tmp_path / "venue.snap"), map_bytes=SMALL_MAP,
                         writemap=False)
    assert report.records == 400
    index = Index(data, map_bytes=SMALL_MAP)
    start_size = index.env.info()["map_size"]
    committer = GroupCommitter(index, asyncio.get_running_loop())
    committer.start()
    try:
        service = ScanService(index, committer)
        await service.put_gate("main", GateProfile(Mode.SINGLE, dates=[10]))
        # Long scan ids make every remembered answer take room; 3 rounds of 400 scans
        # write far more than the map had when the node opened it.
        for round_ in range(3):
            answers = await asyncio.gather(*(
                service.scan(ScanRequest(f"{round_}-{i}-" + "x" * 100, code, "main"))
                for i, code in enumerate(codes)
            ))
            expected = "ok" if round_ == 0 else "already_used"
            assert {a.reason for a in answers} == {expected}
        await committer.flush()
        assert index.env.info()["map_size"] > start_size
        assert index.counts()["scanlog"] == 1200
    finally:
        await committer.stop()
        index.close()
