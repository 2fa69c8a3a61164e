"""The same scan_id always gets the same answer and counts once: live, concurrent, and
after a restart of the node on the same LMDB data directory."""

from __future__ import annotations

import asyncio

from edge.importer import import_file
from tests.conftest import run_edge


async def status_of(node) -> dict:
    status, body = await node.call("GET", "/api/v1/status")
    assert status == 200
    return body


async def test_retry_of_first_entry_gets_the_same_ok(edge, venue):
    code = venue.add_ticket("t", holder="Grace Hopper")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    first = await node.scan(code, scan_id="dev1-0001")
    retry = await node.scan(code, scan_id="dev1-0001")
    assert first["reason"] == "ok"
    assert retry == first
    assert (await status_of(node))["scans"]["logged"] == 1
    other = await node.scan(code, scan_id="dev1-0002")
    assert other["reason"] == "already_used"
    assert other["entries"] == 1
    # And the first answer is still remembered as it was.
    assert await node.scan(code, scan_id="dev1-0001") == first


async def test_retry_of_a_refusal_keeps_the_refusal(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    assert (await node.scan(code, scan_id="a"))["reason"] == "ok"
    refused = await node.scan(code, scan_id="b")
    assert refused["reason"] == "already_used"
    assert await node.scan(code, scan_id="b") == refused


async def test_same_scan_id_answer_does_not_depend_on_the_new_body(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    await node.gate("door", mode="entry_exit", dates=[10])
    first = await node.scan(code, scan_id="x")
    # A retry of the same scan_id that somehow carries another body still counts once.
    again = await node.scan("garbage-code", gate="door", scan_id="x", direction="exit")
    assert again == first
    assert (await status_of(node))["scans"]["logged"] == 1


async def test_concurrent_retries_of_one_scan_id(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    answers = await asyncio.gather(*(node.scan(code, scan_id="burst") for _ in range(20)))
    assert answers[0]["reason"] == "ok"
    assert all(a == answers[0] for a in answers)
    body = await status_of(node)
    assert body["scans"]["logged"] == 1
    assert body["scans"]["total"] == 1
    assert (await node.scan(code))["reason"] == "already_used"


async def test_answers_and_state_survive_a_restart(tmp_path, venue):
    single = venue.add_ticket("single")
    door = venue.add_ticket("door")
    data = tmp_path / "node"
    import_file(data, venue.write(tmp_path / "venue.snap"))
    async with run_edge(data, venue) as node:
        await node.gate("main", mode="single", dates=[10])
        await node.gate("door", mode="entry_exit", dates=[10])
        first = await node.scan(single, scan_id="r-1")
        refused = await node.scan(single, scan_id="r-2")
        inside = await node.scan(door, gate="door", scan_id="r-3")
        node_id = (await status_of(node))["node_id"]
    assert (first["reason"], refused["reason"], inside["reason"]) == (
        "ok", "already_used", "ok")
    async with run_edge(data, venue) as node:
        # Gate profiles, remembered answers, scan state and the log are all on disk.
        status, gates = await node.call("GET", "/api/v1/gates")
        assert status == 200 and [g["gate"] for g in gates["gates"]] == ["door", "main"]
        assert await node.scan(single, scan_id="r-1") == first
        assert await node.scan(single, scan_id="r-2") == refused
        assert await node.scan(door, gate="door", scan_id="r-3") == inside
        assert (await node.scan(single, scan_id="r-4"))["reason"] == "already_used"
        assert (await node.scan(door, gate="door", scan_id="r-5"))["reason"] == "exit_ok"
        body = await status_of(node)
        assert body["node_id"] == node_id
        assert body["scans"]["logged"] == 5


async def test_reimporting_a_snapshot_keeps_what_happened_at_the_gates(tmp_path, venue):
    """A fresh snapshot replaces the records but not the scan state or answers."""
    code = venue.add_ticket("t")
    data = tmp_path / "node"
    snap = venue.write(tmp_path / "venue.snap")
    import_file(data, snap)
    async with run_edge(data, venue) as node:
        await node.gate("main", mode="single", dates=[10])
        first = await node.scan(code, scan_id="k-1")
    import_file(data, venue.write(tmp_path / "venue2.snap", cursor=7))
    async with run_edge(data, venue) as node:
        assert await node.scan(code, scan_id="k-1") == first
        assert (await node.scan(code, scan_id="k-2"))["reason"] == "already_used"
        assert (await status_of(node))["sync"]["cursor"] == 7
