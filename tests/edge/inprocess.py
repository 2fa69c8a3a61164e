"""A ScanService on a real LMDB index with its real writer thread, for tests that drive
the service itself rather than the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from edge.importer import import_file
from edge.index import Index
from edge.model import GateProfile, Mode
from edge.scan import ScanService
from edge.scanlog import GroupCommitter, WriteFn
from tests.venue import Venue


@contextlib.asynccontextmanager
async def scan_service(
    tmp_path: Path, venue: Venue, **committer: Any
) -> AsyncIterator[ScanService]:
    """*venue* imported into a fresh index under *tmp_path*, gate ``main`` (single entry,
    date 10) set, a committer with *committer* (``GroupCommitter``'s options); the
    writer is stopped and the index closed on the way out."""
    data = tmp_path / "node"
    import_file(data, venue.write(tmp_path / "venue.snap"))
    index = Index(data)
    committer = GroupCommitter(index, asyncio.get_running_loop(), **committer)
    committer.start()
    try:
        service = ScanService(index, committer)
        await service.put_gate("main", GateProfile(Mode.SINGLE, dates=[10]))
        yield service
    finally:
        await committer.stop()
        index.close()


def put_meta(key: bytes, value: bytes = b"1") -> WriteFn:
    """A write of one ``meta`` key, for the committer."""

    def op(txn: Any, committer: GroupCommitter) -> None:
        txn.put(key, value, db=committer._index.meta)

    return op


def broken(_txn: Any, _committer: GroupCommitter) -> None:
    """A write the disk refuses."""
    raise OSError(5, "Input/output error")
