"""A core restored from a backup has lost the scans nodes uploaded since: a node whose
cursor is ahead of it takes a new snapshot and sends its whole scan log again, so the
core counts every admission once and reports a ticket admitted twice as a conflict."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path
from typing import Any

from edge.follower import Follower
from edge.index import Index, encoder
from edge.model import GateProfile, Mode, ScanRequest
from edge.scan import ScanService
from edge.scanlog import GroupCommitter
from sync.client import CoreClient
from sync.wire import ScanUpload, UploadResult
from tests.e2e.conftest import Site
from tests.e2e.procs import VENUE, eventually, sell
from tests.edge.inprocess import put_meta


async def test_a_node_sends_its_scans_again_to_a_core_restored_from_a_backup(
    site: Site,
) -> None:
    http, core = site.http, site.core
    order = await sell(http, core, site.event)
    ticket = order["tickets"][0]
    n1 = await site.add_edge("n1")
    await eventually(lambda: site.synced(n1), 10)
    core.stop()
    backup = site.tmp / "core-backup"
    shutil.copytree(site.tmp / "core", backup)
    core.start()
    await core.wait_ready(http.session)
    assert (await http.scan(n1, ticket["code"]))["reason"] == "ok"
    await eventually(lambda: site.synced(n1), 10)
    assert (await site.ticket(ticket["id"]))["scans"] == 1
    # The core's disk is lost; it comes back from the backup, without that scan.
    core.stop()
    shutil.rmtree(site.tmp / "core")
    shutil.copytree(backup, site.tmp / "core")
    core.start()
    await core.wait_ready(http.session)

    async def scan_back() -> bool:
        return bool((await site.ticket(ticket["id"]))["scans"] == 1)

    await eventually(scan_back, 15)
    await eventually(lambda: site.synced(n1), 10)
    # n1 knows the ticket is used; a node that joins now learns it from the core.
    n2 = await site.add_edge("n2")
    await eventually(lambda: site.synced(n2), 10)
    assert (await http.scan(n2, ticket["code"]))["reason"] == "already_used"
    await eventually(lambda: site.synced(n2), 10)
    seen = await site.ticket(ticket["id"])
    assert seen["scans"] == 2 and seen["entry_count"] == 1 and not seen["conflicts"]


async def test_a_node_the_restored_core_has_overtaken_resyncs(site: Site) -> None:
    """The node is away while the core is restored and makes new changes past the
    node's cursor: the same numbers now name other changes. The node must notice (the
    tags of its cursor's change differ), take a snapshot, replay, and send its log
    again; else it skips the changes under its old cursor (here a cancellation) and
    the core never gets back the scan it lost."""
    http, core = site.http, site.core
    first = await sell(http, core, site.event, quantity=2)
    used, cancelled = first["tickets"]
    n1 = await site.add_edge("n1")
    await eventually(lambda: site.synced(n1), 10)
    core.stop()
    backup = site.tmp / "core-backup"
    shutil.copytree(site.tmp / "core", backup)
    core.start()
    await core.wait_ready(http.session)
    assert (await http.scan(n1, used["code"]))["reason"] == "ok"
    await eventually(lambda: site.synced(n1), 10)
    was = (await site.status(n1))["sync"]["cursor"]
    n1.stop()
    core.stop()
    shutil.rmtree(site.tmp / "core")
    shutil.copytree(backup, site.tmp / "core")
    core.start()
    await core.wait_ready(http.session)
    # New history on the restored core, past n1's cursor: the cancellation comes first.
    await http.ok("POST", f"{core.url}/api/v1/orders/{first['number']}/cancel",
                  {"tickets": [cancelled["id"]]})
    for _ in range(3):
        await sell(http, core, site.event)
    n2 = await site.add_edge("n2")
    await eventually(lambda: site.synced(n2), 10)
    assert (await site.status(n2))["sync"]["cursor"] > was  # n1's number, another change
    n1.start()
    await n1.wait_ready(http.session)
    await eventually(lambda: site.synced(n1), 15)

    async def refused() -> bool:
        return bool((await http.scan(n1, cancelled["code"]))["reason"] == "cancelled")

    await eventually(refused, 10)
    assert (await http.scan(n1, used["code"]))["reason"] == "already_used"
    await eventually(lambda: site.synced(n1), 10)
    # The admission the restore lost came back, once, with the refusal after it.
    seen = await site.ticket(used["id"])
    assert seen["scans"] == 2 and seen["entry_count"] == 1 and not seen["conflicts"], seen


async def test_an_upload_in_flight_cannot_store_its_cursor_over_the_reset(
    tmp_path: Path, site: Site
) -> None:
    """The upload loop holds the outbox lock from reading the outbox to storing its
    cursor, and the import that resets that cursor takes it too: an upload acknowledged
    after the reset must not move the cursor past the scans to send again."""
    order = await sell(site.http, site.core, site.event, quantity=3)
    index = Index(tmp_path / "node")
    committer = GroupCommitter(index, asyncio.get_running_loop())
    committer.start()
    uploading: asyncio.Task[None] | None = None
    try:
        async with CoreClient(site.core.url, site.node_token, VENUE) as client:
            service = ScanService(index, committer)
            follower = Follower(service, client, "n1")
            await follower.bootstrap(index.path)
            await service.put_gate("main", GateProfile(Mode.SINGLE))
            for i, ticket in enumerate(order["tickets"]):
                answer = await service.scan(ScanRequest(f"s{i}", ticket["code"], "main"))
                assert answer.reason == "ok"
            sent: list[str] = []
            acked = asyncio.Event()
            real = client.upload

            async def upload(batch: ScanUpload, verify: Any) -> UploadResult:
                sent.extend(item.scan_id for item in batch.items)
                result = await real(batch, verify)
                if len(sent) <= 3:
                    await acked.wait()  # acknowledged, the cursor not stored yet
                return result

            client.upload = upload  # type: ignore[method-assign, assignment]
            uploading = asyncio.create_task(follower._upload())
            for _ in range(200):
                if sent:
                    break
                await asyncio.sleep(0.02)
            assert sent == ["s0", "s1", "s2"]
            # As after a restore: the node's cursor is ahead of what the core has.
            await committer.submit(put_meta(b"cursor", encoder.encode(10**6)))
            resync = asyncio.create_task(follower.bootstrap(index.path))
            await asyncio.sleep(0.3)
            acked.set()
            await resync
            for _ in range(200):
                if len(sent) >= 6:
                    break
                await asyncio.sleep(0.05)
            assert sent == ["s0", "s1", "s2"] * 2
    finally:
        if uploading is not None:
            uploading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uploading
        await committer.stop()
        index.close()
