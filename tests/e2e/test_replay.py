"""A snapshot's admissions replay cut short by the core going away resumes after the last
batch it stored, never applying a batch twice (a real core process, killed with SIGKILL
between two batches of the replay)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from edge.follower import Follower
from edge.index import Index
from edge.model import Direction, GateProfile, Mode, ScanRequest
from edge.scan import ScanService
from edge.scanlog import GroupCommitter
from sync.client import CoreClient, CoreUnavailable
from sync.rules import Reason
from sync.wire import ScanItem, ScanUpload
from tests.e2e.conftest import Site
from tests.e2e.procs import VENUE, sell

MULTI_ADMISSIONS = 1998
"""With the three below, one more than the core's admissions batch (2,000)."""


async def test_a_replay_cut_between_batches_resumes_after_the_stored_one(
    tmp_path: Path, site: Site
) -> None:
    proc, http, event = site.core, site.http, site.event
    date = event["dates"][0]["id"]
    order = await sell(http, proc, event, quantity=2)
    t, f = order["tickets"][0], order["tickets"][1]
    now = time.time()

    def admitted(sid: str, ticket: int, mode: Mode, direction: Direction, reason: Reason,
                 at: float) -> ScanItem:
        return ScanItem(sid, ticket, "accepted", reason, direction, "g2", mode, date, at, at)

    # Node n2 admitted F (multi) 1,998 times, then T in and out (entry_exit), then F once
    # more: the replay takes two batches; T's entry and exit are in the first.
    items = [admitted(f"f-{i}", f["id"], Mode.MULTI, Direction.ENTRY, Reason.OK,
                      now - 100 + i * 0.01) for i in range(MULTI_ADMISSIONS)]
    items += [
        admitted("t-in", t["id"], Mode.ENTRY_EXIT, Direction.ENTRY, Reason.OK, now - 50),
        admitted("t-out", t["id"], Mode.ENTRY_EXIT, Direction.EXIT, Reason.EXIT_OK, now - 40),
        admitted("f-last", f["id"], Mode.MULTI, Direction.ENTRY, Reason.OK, now - 30),
    ]

    index = Index(tmp_path / "node")
    committer = GroupCommitter(index, asyncio.get_running_loop())
    committer.start()
    try:
        async with CoreClient(proc.url, site.node_token, VENUE) as client:
            service = ScanService(index, committer)
            follower = Follower(service, client, "n1")
            acks = await client.upload(ScanUpload("n2", items), lambda *_: True)
            assert all(a.status == "stored" for a in acks.acks)

            real = client.admissions
            calls = 0

            async def admissions(*args: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls == 2:  # the core goes away after the first batch
                    proc.kill(signal.SIGKILL)
                return await real(*args)

            client.admissions = admissions  # type: ignore[method-assign, assignment]
            with pytest.raises(CoreUnavailable):
                await follower.bootstrap(index.path)
            assert service.state_of(f["id"]).entries == MULTI_ADMISSIONS
            await service.put_gate("main", GateProfile(Mode.ENTRY_EXIT))
            # T's holder enters here after n2's entry and exit: inside now. Replaying
            # the first batch again would apply that old exit over this entry.
            first = await service.scan(ScanRequest("n1-1", t["code"], "main", Direction.ENTRY))
            assert first.reason == "ok"

            proc.start()
            await proc.wait_ready(http.session)
            await follower.replay_pending()  # what the follow loop does on its next round
            assert index.get_meta("replay") is None
            assert service.state_of(f["id"]).entries == MULTI_ADMISSIONS + 1
            assert service.state_of(t["id"]).inside
            again = await service.scan(ScanRequest("n1-2", t["code"], "main", Direction.ENTRY))
            assert again.reason == "already_inside"
    finally:
        await committer.stop()
        index.close()
