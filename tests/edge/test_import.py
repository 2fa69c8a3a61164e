"""Importing a snapshot into a node's LMDB index: all or nothing."""

from __future__ import annotations

import pytest

from edge.importer import import_file
from sync.snapshot import SnapshotError
from tests.conftest import run_edge


async def test_truncated_snapshot_leaves_the_index_as_it_was(tmp_path, venue):
    code = venue.add_ticket("t", holder="Ada Lovelace")
    data = tmp_path / "node"
    report = import_file(data, venue.write(tmp_path / "good.snap", cursor=3))
    assert (report.records, report.cursor, report.venue) == (1, 3, "Arena")
    later = venue.add_ticket("later")
    full = venue.write(tmp_path / "new.snap", cursor=4).read_bytes()
    for cut in (len(full) - 1, len(full) // 2, 20):
        (tmp_path / "bad.snap").write_bytes(full[:cut])
        with pytest.raises(SnapshotError):
            import_file(data, tmp_path / "bad.snap")
    async with run_edge(data, venue) as node:
        await node.gate("main", mode="single", dates=[10])
        assert (await node.scan(code))["reason"] == "ok"
        # The half-imported snapshot's new ticket is not there (and its code is signed,
        # so it is admitted on its signature, as sold after the last sync).
        status, body = await node.call("GET", "/api/v1/status")
        assert status == 200
        assert (body["index"]["records"], body["sync"]["cursor"]) == (1, 3)
        assert (await node.scan(later))["reason"] == "ok"
