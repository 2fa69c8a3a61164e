"""A core restored from a backup has lost the scans nodes uploaded since: a node whose
cursor is ahead of it takes a new snapshot and sends its whole scan log again, so the
core counts every admission once and reports a ticket admitted twice as a conflict."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec

from edge.follower import Follower
from edge.index import CURSOR_TAG_KEY, REPLAY_KEY, Index, encoder
from edge.model import GateProfile, Mode, ScanRequest
from edge.scan import ScanService
from edge.scanlog import GroupCommitter
from sync.client import CoreClient, CoreUnavailable
from sync.wire import Resync, ScanUpload, UploadResult
from tests.e2e.conftest import Site
from tests.e2e.procs import VENUE, eventually, sell
from tests.edge.inprocess import put_meta


async def backup(site: Site) -> Path:
    """A copy of the core's data, taken while it is stopped; the core runs again."""
    site.core.stop()
    copy = site.tmp / "core-backup"
    shutil.copytree(site.tmp / "core", copy)
    site.core.start()
    await site.core.wait_ready(site.http.session)
    return copy


async def restore(site: Site, copy: Path) -> None:
    """The core's disk is lost: it comes back from *copy*."""
    site.core.stop()
    shutil.rmtree(site.tmp / "core")
    shutil.copytree(copy, site.tmp / "core")
    site.core.start()
    await site.core.wait_ready(site.http.session)


@contextlib.asynccontextmanager
async def node(site: Site, data: Path) -> AsyncIterator[tuple[Follower, CoreClient]]:
    """An in-process node following the site's core (not started: the test drives it)."""
    index = Index(data)
    committer = GroupCommitter(index, asyncio.get_running_loop())
    committer.start()
    try:
        async with CoreClient(site.core.url, site.node_token, VENUE) as client:
            service = ScanService(index, committer)
            yield Follower(service, client, "n1"), client
    finally:
        await committer.stop()
        index.close()


async def following(follower: Follower, check: Callable[[], bool], within_s: float) -> None:
    """Run the follow loop until *check* holds (bounded), then stop it."""
    task = asyncio.create_task(follower._follow())
    try:
        await eventually(check, within_s)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_node_sends_its_scans_again_to_a_core_restored_from_a_backup(
    site: Site,
) -> None:
    http, core = site.http, site.core
    order = await sell(http, core, site.event)
    ticket = order["tickets"][0]
    n1 = await site.add_edge("n1")
    await eventually(lambda: site.synced(n1), 10)
    copy = await backup(site)
    assert (await http.scan(n1, ticket["code"]))["reason"] == "ok"
    await eventually(lambda: site.synced(n1), 10)
    assert (await site.ticket(ticket["id"]))["scans"] == 1
    await restore(site, copy)  # without that scan

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
    copy = await backup(site)
    assert (await http.scan(n1, used["code"]))["reason"] == "ok"
    await eventually(lambda: site.synced(n1), 10)
    was = (await site.status(n1))["sync"]["cursor"]
    n1.stop()
    await restore(site, copy)
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


async def test_a_resync_sends_the_log_again_even_if_the_head_passed_the_cursor_meanwhile(
    tmp_path: Path, site: Site
) -> None:
    """The core answers ``Resync`` (the node's cursor is ahead of it), then, before the
    node takes the snapshot, the other nodes' resent logs push its head past that
    cursor: the snapshot is not behind the node, yet the core lost its scan."""
    ticket = (await sell(site.http, site.core, site.event))["tickets"][0]
    async with node(site, tmp_path / "node") as (follower, client):
        service = follower.service
        await follower.bootstrap(service.index.path)
        await service.put_gate("main", GateProfile(Mode.SINGLE))
        copy = await backup(site)
        assert (await service.scan(ScanRequest("s1", ticket["code"], "main"))).reason == "ok"
        await follower.committer.flush()  # in the index's scan log, not only the journal
        await follower._set_upload_cursor(
            await follower._send(follower.read_outbox(0, 100)))
        await follower.apply(await client.changes(service.cursor(), 0.0, follower.verify))
        assert (await site.ticket(ticket["id"]))["scans"] == 1
        await restore(site, copy)
        batch = await client.changes(service.cursor(), 0.0, follower.verify)
        assert any(isinstance(c, Resync) for c in batch.changes)
        real = client.download_snapshot

        async def download(dest: Path) -> Any:
            await sell(site.http, site.core, site.event, quantity=3)
            return await real(dest)

        client.download_snapshot = download  # type: ignore[method-assign]
        await follower.apply(batch)
        assert follower.upload_cursor() == 0  # s1 goes up again


async def test_a_replay_the_restored_core_cannot_finish_becomes_a_resync(
    tmp_path: Path, site: Site
) -> None:
    """A replay cut short (the core gone), then the core comes back from a backup
    whose head is below the replay's end: it can never answer up to there. Was: the
    node retried the replay forever, never polled, never heard of the Resync, and
    refused quick cancels for good."""
    await sell(site.http, site.core, site.event)
    copy = await backup(site)
    await sell(site.http, site.core, site.event, quantity=3)
    async with node(site, tmp_path / "node") as (follower, client):
        index = follower.index
        real = client.admissions

        async def gone(*_args: Any, **_kw: Any) -> Any:
            raise CoreUnavailable("connection refused")

        client.admissions = gone  # type: ignore[method-assign]
        with contextlib.suppress(CoreUnavailable):
            await follower.bootstrap(index.path)
        client.admissions = real  # type: ignore[method-assign]
        assert index.get_meta(REPLAY_KEY.decode()) is not None
        await restore(site, copy)
        await following(follower, lambda: index.get_meta(REPLAY_KEY.decode()) is None
                        and follower.caught_up_at is not None, 15)
        head = (await client.changes(0, 0.0, follower.verify)).head
        assert follower.service.cursor() == head


async def test_a_cursor_stored_without_its_tag_takes_the_cores(
    tmp_path: Path, site: Site
) -> None:
    """A node whose cursor was stored by a version before tags learns its tag from its
    next poll: else a restore that overtakes it would go unnoticed."""
    await sell(site.http, site.core, site.event)
    async with node(site, tmp_path / "node") as (follower, _client):
        index = follower.index
        await follower.bootstrap(index.path)
        stored = index.get_meta(CURSOR_TAG_KEY.decode())
        assert stored is not None
        await follower.committer.submit(put_meta(CURSOR_TAG_KEY, encoder.encode((0, ""))))
        follower._tag = None

        def adopted() -> bool:
            return index.get_meta(CURSOR_TAG_KEY.decode()) == stored

        await following(follower, adopted, 10)


async def test_a_resync_keeps_replaying_the_nodes_own_admissions_when_it_had_to(
    tmp_path: Path, site: Site
) -> None:
    """A node that lost its disk bootstraps under its old name: it replays its own
    admissions too. Cut short after some, its state is no longer empty; a resync then
    must still replay its own, or a ticket it admitted before could pass again."""
    await sell(site.http, site.core, site.event)
    async with node(site, tmp_path / "node") as (follower, client):
        index, service = follower.index, follower.service

        async def gone(*_args: Any, **_kw: Any) -> Any:
            raise CoreUnavailable("connection refused")

        client.admissions = gone  # type: ignore[method-assign]
        with contextlib.suppress(CoreUnavailable):
            await follower.bootstrap(index.path)
        # Part of the replay stored: a state exists (as after its first batches).
        await service.put_gate("main", GateProfile(Mode.SINGLE))
        ticket = (await sell(site.http, site.core, site.event))["tickets"][0]
        assert (await service.scan(ScanRequest("s1", ticket["code"], "main"))).reason == "ok"
        await follower.committer.flush()
        assert index.counts()["state"] == 1
        with contextlib.suppress(CoreUnavailable):
            await follower.bootstrap(index.path, lost=True)
        raw = index.get_meta(REPLAY_KEY.decode())
        assert raw is not None and msgspec.msgpack.decode(raw)[2] is True
