"""A quick cancel while a resync's snapshot replaces the index, or while the admissions
the snapshot lacks are still loading, is refused with a 503.

Decided on the index being replaced, its write would land after the import, over the
snapshot's newer record: stock the box office sold meanwhile came back ``cancelled`` at
this node, and when the core then refused the quick cancel (``sold``), the node put back
the old, unsold version. Decided after the import but before the replay of admissions,
it cancelled stock already used at another node (found in review). The core is a real
process (stopped with SIGSTOP to hold the replay); the node's service and follower run
in this process, so that the writer can be held while the import waits for it.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge.follower import Follower
from edge.index import Index
from edge.model import Direction, GateProfile, Mode, ScanRequest
from edge.scan import Resyncing, ScanService
from edge.scanlog import GroupCommitter
from sync.client import CoreClient
from sync.rules import Reason
from sync.wire import ScanItem, ScanUpload
from tests.e2e.conftest import Site
from tests.e2e.procs import VENUE, Proc, eventually


def signal_core(proc: Proc, sig: int) -> None:
    assert proc.proc is not None
    proc.proc.send_signal(sig)  # not ``Proc.kill``: that waits for the process to end


async def test_quick_cancel_waits_for_a_resync_to_be_stored(tmp_path: Path, site: Site) -> None:
    proc, http, event, node_token = site.core, site.http, site.event, site.node_token
    date, zone = event["dates"][0]["id"], event["zones"][0]["id"]
    stock = (await http.ok("POST", proc.url + "/api/v1/stock", {
        "date": date, "zone": zone, "rate": event["rates"][0]["id"], "quantity": 3,
        "channel": "box_office"}))["tickets"]
    assert len(stock) == 3
    index = Index(tmp_path / "node")
    committer = GroupCommitter(index, asyncio.get_running_loop())
    committer.start()
    try:
        async with CoreClient(proc.url, node_token, VENUE) as client:
            service = ScanService(index, committer)
            follower = Follower(service, client, "n1")
            await follower.bootstrap(index.path)
            await service.put_gate("main", GateProfile(Mode.SINGLE))
            # The box office sells the first printed ticket: the next snapshot has it sold.
            await http.ok("POST", proc.url + "/api/v1/stock/sell", {
                "tickets": [stock[0]["id"]], "customer": {"name": "Ada Guest"}})
            # Another node admitted the second one (stock can be scanned before it is
            # sold at the door): the snapshot has no scan state, the replay brings it.
            now = time.time()
            admitted = ScanItem("n2-1", stock[1]["id"], "accepted", Reason.OK,
                                Direction.ENTRY, "main", Mode.SINGLE, date, now, now)
            await client.upload(ScanUpload("n2", [admitted]), follower.verify)

            in_slow, release = threading.Event(), threading.Event()

            def slow(_txn: Any, _c: GroupCommitter) -> None:
                in_slow.set()
                release.wait(10)

            held = committer.submit(slow)
            await eventually(in_slow.is_set, 5)
            resync = asyncio.create_task(follower.bootstrap(index.path))
            try:
                await eventually(lambda: service.importing > 0, 10)
                with pytest.raises(Resyncing):
                    await service.quick_cancel("qc1", stock[0]["code"])
                # The core stops answering: the import is stored, the replay hangs.
                signal_core(proc, signal.SIGSTOP)
                release.set()
                await held

                def replaying() -> bool:
                    return not service.importing and index.get_meta("replay") is not None

                await eventually(replaying, 5)
                with pytest.raises(Resyncing):
                    await service.quick_cancel("qc2", stock[1]["code"])
            finally:
                release.set()
                signal_core(proc, signal.SIGCONT)
                await resync
            assert service.importing == 0 and index.get_meta("replay") is None
            used = await service.quick_cancel("qc2", stock[1]["code"])
            assert (used.result, used.reason) == ("rejected", "already_used")
            # The retry is decided on the snapshot: sold, so not stock any more.
            answer = await service.quick_cancel("qc1", stock[0]["code"])
            assert (answer.result, answer.reason) == ("rejected", "sold")
            # Its holder gets in.
            scan = await service.scan(ScanRequest("s1", stock[0]["code"], "main"))
            assert scan.reason == "ok"
            # Unsold stock is still quick-cancelled at once.
            other = await service.quick_cancel("qc3", stock[2]["code"])
            assert (other.result, other.reason) == ("accepted", "ok")
    finally:
        await committer.stop()
        index.close()
