"""Retention (``edge.retention.Pruner``): acknowledged scan log entries older than the
retention go with their remembered answers; nothing the core has not acknowledged, and
never the entry that numbers the next ones. A real LMDB index and writer thread."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.importer import import_file
from edge.index import Index, encoder
from edge.model import GateProfile, Mode, ScanRequest
from edge.retention import DAY_S, Pruner
from edge.scan import QUICK_CANCEL_PREFIX, ScanService
from edge.scanlog import GroupCommitter
from sync.snapshot import Channel
from tests.venue import Venue

KEEP_S = 30 * DAY_S


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def started(data: Path, clock: Callable[[], float]) -> tuple[ScanService, Any]:
    index = Index(data)
    committer = GroupCommitter(index, asyncio.get_running_loop())
    committer.start()
    service = ScanService(index, committer, clock=clock)
    await service.put_gate("main", GateProfile(Mode.MULTI))

    async def stop() -> None:
        await committer.stop()
        index.close()

    return service, stop


@pytest.fixture
async def node(tmp_path: Path, venue: Venue) -> AsyncIterator[tuple[ScanService, Clock, Path]]:
    for i in range(12):
        venue.add_ticket(f"t{i}")
    venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    data = tmp_path / "node"
    import_file(data, venue.write(tmp_path / "venue.snap"))
    clock = Clock(venue.now)
    service, stop = await started(data, clock)
    try:
        yield service, clock, data
    finally:
        await stop()


async def acknowledge(service: ScanService, seq: int) -> None:
    """What the follower stores once the core has acknowledged the log up to *seq*."""
    raw = encoder.encode(seq)

    def op(txn: Any, _c: GroupCommitter) -> None:
        txn.put(b"upload_cursor", raw, db=service.index.meta)

    await service.committer.submit(op)


async def logged(service: ScanService) -> list[int]:
    """The scan log's seqs in the index (journaled scans stored first)."""
    await service.committer.flush()
    with service.env.begin(db=service.index.scanlog) as txn:
        return [int.from_bytes(k, "big") for k, _v in txn.cursor()]


async def remembered(service: ScanService, scan_id: str) -> bool:
    await service.committer.flush()
    with service.env.begin(db=service.index.answers) as txn:
        return txn.get(scan_id.encode()) is not None


async def scan(service: ScanService, scan_id: str, code: str) -> str:
    return str((await service.scan(ScanRequest(scan_id, code, "main"))).reason)


async def test_acknowledged_old_entries_go_with_their_answers(
    node: tuple[ScanService, Clock, Path], venue: Venue
) -> None:
    service, clock, _data = node
    codes = [venue.codes[f"t{i}"] for i in range(12)]
    stock = venue.codes["stock"]
    assert (await service.quick_cancel("old0", stock)).reason == "ok"  # its own key
    for i in range(1, 6):
        assert await scan(service, f"old{i}", codes[i]) == "ok"
    clock.now += 40 * DAY_S  # the show is long over: later scans are ``too_late``
    for i in range(6, 9):
        await scan(service, f"new{i}", codes[i])
    seqs = await logged(service)
    assert len(seqs) == 9
    # The core has acknowledged the old ones but the last.
    await acknowledge(service, seqs[4])
    pruner = Pruner(service, KEEP_S, clock=clock, quiet_s=0)
    assert await pruner.prune() == 5
    assert await logged(service) == seqs[5:]
    assert not any([await remembered(service, f"old{i}") for i in range(5)])
    assert not await remembered(service, (QUICK_CANCEL_PREFIX + b"old0").decode())
    assert await remembered(service, "old5") and await remembered(service, "new6")
    # A kept scan_id still gets its first answer, logged once; a pruned one is decided
    # afresh (today: too late) and logged anew. The ticket's scan state stays.
    assert await scan(service, "old5", codes[5]) == "ok"
    assert len(await logged(service)) == 4
    assert await scan(service, "old1", codes[1]) == "too_late"
    assert len(await logged(service)) == 5
    assert service.index.state_of(venue.ids["t1"]).entries == 1
    assert pruner.pruned == 5
    assert await pruner.prune() == 0  # nothing more is due
    # Once acknowledged, the last old one goes; the recent ones stay, acknowledged or not.
    await acknowledge(service, (await logged(service))[-1])
    assert await pruner.prune() == 1
    assert (await logged(service))[:3] == seqs[6:]
    assert await remembered(service, "new6") and not await remembered(service, "old5")


async def test_unacknowledged_and_newest_entries_stay_and_seqs_go_on_after_restart(
    node: tuple[ScanService, Clock, Path], venue: Venue
) -> None:
    service, clock, data = node
    for i in range(4):
        await scan(service, f"s{i}", venue.codes[f"t{i}"])
    clock.now += 400 * DAY_S
    pruner = Pruner(service, KEEP_S, clock=clock, quiet_s=0)
    seqs = await logged(service)
    await acknowledge(service, seqs[-1])
    # The clock jumped a year ahead, but the newest entry is seconds old by its own
    # time: nothing is a month older than it yet (a bad clock must not wipe the log).
    assert await pruner.prune() == 0
    await scan(service, "later", venue.codes["t5"])  # logged under the new time
    # All four are due by the clock now, but the core has acknowledged only three.
    await acknowledge(service, seqs[2])
    assert await pruner.prune() == 3
    assert await logged(service) == [*seqs[3:], seqs[3] + 1]
    await acknowledge(service, seqs[3] + 1)
    assert await pruner.prune() == 1
    seqs = await logged(service)
    assert len(seqs) == 1  # the newest numbers the next entries
    await service.committer.stop()
    service.index.close()
    # A restarted node goes on numbering after it: the follower uploads after its cursor.
    service2, stop = await started(data, clock)
    try:
        await scan(service2, "after", venue.codes["t9"])
        assert await logged(service2) == [seqs[-1], seqs[-1] + 1]
    finally:
        await stop()


async def test_nothing_goes_while_scans_come(
    node: tuple[ScanService, Clock, Path], venue: Venue
) -> None:
    service, clock, _data = node
    await scan(service, "s0", venue.codes["t0"])
    clock.now += 40 * DAY_S
    await scan(service, "s1", venue.codes["t1"])
    await acknowledge(service, (await logged(service))[-1])
    busy = Pruner(service, KEEP_S, clock=clock)  # the default: quiet for a minute
    assert await busy.prune() == 0 and busy.backlog
    await scan(service, "s2", venue.codes["t2"])
    assert not busy.quiet()
    assert await Pruner(service, KEEP_S, clock=clock, quiet_s=0).prune() == 1


async def test_a_large_backlog_goes_in_chunks(
    node: tuple[ScanService, Clock, Path], venue: Venue
) -> None:
    service, clock, _data = node
    reqs = [ScanRequest(f"b{i}", venue.codes[f"t{i % 12}"], "main") for i in range(60)]
    await asyncio.gather(*(service.scan(r) for r in reqs))
    clock.now += 31 * DAY_S
    await scan(service, "now", venue.codes["t0"])
    await acknowledge(service, (await logged(service))[-1])
    commits = service.committer.commits
    pruner = Pruner(service, KEEP_S, clock=clock, chunk=7, quiet_s=0, pause_s=0)
    assert await pruner.prune() == 60
    assert service.committer.commits - commits == 9  # ceil(60 / 7) writes
    assert len(await logged(service)) == 1
