"""Regressions found in review of the edge node and its sync (see commit messages)."""

from __future__ import annotations

import asyncio


async def test_scan_id_too_long_for_lmdb_is_refused_and_does_not_fail_other_scans(edge, venue):
    # 128 characters pass the length cap, but 512 UTF-8 bytes exceed LMDB's key size: the
    # put failed inside the shared group commit and every scan merged with it got a 503.
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    fat = "\U0001f600" * 128
    body = {"scan_id": fat, "code": code, "gate": "main"}
    results = await asyncio.gather(
        node.call("POST", "/api/v1/scans", body),
        node.call("POST", "/api/v1/scans", {"scan_id": "ok-1", "code": code, "gate": "main"}),
    )
    assert results[0][0] == 400, results[0]
    assert results[1][0] == 200 and results[1][1]["reason"] == "ok", results[1]
    status, answer = await node.call("POST", "/api/v1/quick-cancel",
                                     {"scan_id": fat, "code": code})
    assert status == 400, answer
    status, answer = await node.call("POST", "/api/v1/scans/batch", {"scans": [body]})
    assert status == 400, answer


async def test_ws_scan_id_too_long_for_lmdb_gets_an_error_message(edge, venue):
    from tests.edge.test_ws import connect, receive

    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    async with await connect(node) as ws:
        await ws.send_json({"scan_id": "\U0001f600" * 128, "code": code, "gate": "main"})
        assert (await receive(ws))["error"] == "invalid"
        await ws.send_json({"scan_id": "w1", "code": code, "gate": "main"})
        assert (await receive(ws))["reason"] == "ok"



async def test_sync_tasks_survive_a_failed_commit(tmp_path, venue):
    """A CommitFailed (the disk) while applying a batch or storing the upload cursor used
    to end the follow or the upload task for good: the node silently stopped syncing."""
    from edge.follower import Follower
    from edge.importer import import_file
    from edge.index import Index
    from edge.model import GateProfile, Mode, ScanRequest
    from edge.scan import ScanService
    from edge.scanlog import CommitFailed, GroupCommitter
    from sync.wire import Ack, ChangeBatch, RecordChanged, UploadResult

    code = venue.add_ticket("t")
    import_file(tmp_path / "n", venue.write(tmp_path / "v.snap"))
    index = Index(tmp_path / "n")
    committer = GroupCommitter(index, asyncio.get_running_loop())
    committer.start()
    service = ScanService(index, committer)
    record = venue.records[0]
    cursor = service.cursor()
    await service.put_gate("main", GateProfile(Mode.SINGLE, dates=[10]))
    assert (await service.scan(ScanRequest("s1", code, "main"))).reason == "ok"

    class FakeCore:
        async def changes(self, after, wait, verify):
            if after > cursor:
                await asyncio.sleep(3600)
            return ChangeBatch(cursor + 1, [RecordChanged(cursor + 1, record)], head=cursor + 1)

        async def upload(self, upload, verify):
            return UploadResult([Ack(i.scan_id, "stored") for i in upload.items])

    follower = Follower(service, FakeCore(), "n1")  # type: ignore[arg-type]
    submit = committer.submit
    failing = {"left": 4}

    def flaky(op, **kw):
        if failing["left"]:
            failing["left"] -= 1
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(CommitFailed("disk"))
            return fut
        return submit(op, **kw)

    committer.submit = flaky  # type: ignore[method-assign]
    follower.start()
    try:
        for _ in range(300):
            if service.cursor() == cursor + 1 and follower.upload_cursor() == 1:
                break
            await asyncio.sleep(0.02)
        assert service.cursor() == cursor + 1
        assert follower.upload_cursor() == 1
        assert failing["left"] == 0
        assert all(not t.done() for t in follower._tasks)
    finally:
        await follower.stop()
        await committer.stop()
        index.close()
