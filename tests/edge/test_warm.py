"""The index is read into the page cache at start (``edge.index.Warmer``): a node after a
reboot must not make its first thousands of scans wait for the disk.

Residency is read with mincore(2) on a real LMDB file whose pages were evicted with
``POSIX_FADV_DONTNEED``; where the file system ignores eviction (tmpfs) there is
nothing to show and the residency tests skip.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import mmap
import os
import random
from pathlib import Path
from typing import Any

import pytest

from edge.importer import import_file
from edge.index import Index, Warmer, u64
from tests.conftest import run_edge
from tests.venue import Venue

PAGE = mmap.PAGESIZE
FILLER_RECORDS = 3000
"""Records of 1 KB beside the venue's: a few MB of used file, hundreds of pages."""

READ_AHEAD_BYTES = 64 << 20
"""More than the kernel reads ahead of a sequential reader past the end of the reads:
the block device's ``read_ahead_kb`` (128 KB by default, 8 MB on some VMs), doubled
for a reader the kernel sees as sequential. The hole is 1 GiB."""

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def resident_pages(path: Path, start: int, stop: int) -> tuple[int, int]:
    """(resident, total) pages of *path* in [start, stop), by mincore(2)."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), stop, access=mmap.ACCESS_COPY) as mm:
        # A private mapping that is never touched faults nothing in; mincore reports
        # the page cache's residency of the file's pages behind it.
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        pages = (stop + PAGE - 1) // PAGE
        vec = (ctypes.c_ubyte * pages)()
        if _libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(stop), vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        first = start // PAGE
        resident = sum(vec[i] & 1 for i in range(first, pages))
        return resident, pages - first


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def built_index(tmp_path: Path, venue: Venue) -> tuple[Path, int]:
    """An imported index (a sparse 1 GiB map file) with filler records; (dir, used)."""
    data = tmp_path / "node"
    venue.add_ticket("warm")
    import_file(data, venue.write(tmp_path / "venue.snap"))
    index = Index(data)
    rng = random.Random(7)
    with index.env.begin(write=True, db=index.records) as txn:
        for i in range(FILLER_RECORDS):
            txn.put(u64(10_000_000 + i), rng.randbytes(1024))
    used = index.used_bytes()
    index.close()
    return data, used


def cold(data: Path, used: int) -> None:
    file = data / "data.mdb"
    evict(file)
    resident, total = resident_pages(file, 0, used)
    if resident > total // 10:
        pytest.skip(f"this file system keeps evicted pages ({resident}/{total} resident)")


def test_warmer_reads_the_used_part_of_the_file_and_nothing_else(
    tmp_path: Path, venue: Venue
) -> None:
    data, used = built_index(tmp_path, venue)
    file = data / "data.mdb"
    assert file.stat().st_size > 4 * used  # the map's sparse rest stays unread
    cold(data, used)
    index = Index(data)
    try:
        warmer = Warmer(index, budget_bytes=1 << 40)
        warmer.run()
    finally:
        index.close()
    assert warmer.done and warmer.read_bytes == warmer.target_bytes == used
    resident, total = resident_pages(file, 0, used)
    assert resident == total
    # The map's 1 GiB hole was not read: at most the kernel's read-ahead past the end.
    everything, _ = resident_pages(file, 0, file.stat().st_size)
    assert everything * PAGE <= used + READ_AHEAD_BYTES


def test_warmer_keeps_to_its_budget_and_stops_when_told(tmp_path: Path, venue: Venue) -> None:
    data, used = built_index(tmp_path, venue)
    cold(data, used)
    index = Index(data)
    try:
        budget = 40 * PAGE
        warmer = Warmer(index, budget_bytes=budget)
        warmer.run()
        assert warmer.read_bytes == warmer.target_bytes == budget
        file = data / "data.mdb"
        inside, _ = resident_pages(file, 0, budget)
        assert inside == budget // PAGE
        # Read-around may bring a few pages past the budget, never the rest of the file.
        after, total = resident_pages(file, budget, used)
        assert after < total // 4

        stopped = Warmer(index, budget_bytes=1 << 40)
        stopped.stop()  # a node stopping before the read began
        stopped.run()
        assert stopped.done and stopped.read_bytes == 0
    finally:
        index.close()


async def test_a_node_warms_its_index_at_start_and_reports_it(
    tmp_path: Path, venue: Venue
) -> None:
    data, used = built_index(tmp_path, venue)
    cold(data, used)
    async with run_edge(data, venue) as node:
        warm: dict[str, Any] = {}
        for _ in range(100):  # at most ~5 s; a few MB take milliseconds
            status, body = await node.call("GET", "/api/v1/status")
            assert status == 200
            warm = body["index"]["page_cache_warm"]
            if warm["done"]:
                break
            await asyncio.sleep(0.05)
        assert warm["done"] and warm["read_bytes"] == warm["target_bytes"] >= used
        resident, total = resident_pages(data / "data.mdb", 0, used)
        assert resident == total
        # The node serves meanwhile and after: a scan still gets its answer.
        await node.gate("main", mode="single", dates=[10])
        answer = await node.scan(venue.codes["warm"])
        assert answer["result"] == "accepted"
