"""Concurrent scans on one node: one ticket, many scanners at once."""

from __future__ import annotations

import asyncio
import re

N = 50


async def metric(node, reason: str) -> int:
    status, text = await node.call("GET", "/metrics")
    assert status == 200
    match = re.search(rf'^edge_scans_total\{{result="\w+",reason="{reason}"\}} (\d+)$', text,
                      re.MULTILINE)
    assert match, text
    return int(match.group(1))


async def test_fifty_scanners_one_single_entry_ticket(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    answers = await asyncio.gather(*(node.scan(code, scan_id=f"c-{i}") for i in range(N)))
    reasons = [a["reason"] for a in answers]
    assert reasons.count("ok") == 1
    assert reasons.count("already_used") == N - 1
    assert sorted(a["scan_id"] for a in answers) == sorted(f"c-{i}" for i in range(N))
    status, body = await node.call("GET", "/api/v1/status")
    assert status == 200
    assert body["scans"]["logged"] == N
    assert body["scans"]["accepted"] == 1
    assert await metric(node, "ok") == 1
    assert await metric(node, "already_used") == N - 1


async def test_concurrent_entry_exit_never_admits_twice_in_a_row(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("door", mode="entry_exit", dates=[10])
    answers = await asyncio.gather(
        *(node.scan(code, gate="door", direction="entry", scan_id=f"e-{i}") for i in range(N))
    )
    reasons = [a["reason"] for a in answers]
    assert reasons.count("ok") == 1
    assert reasons.count("already_inside") == N - 1


async def test_concurrent_pass_limit(edge, venue):
    code = venue.add_pass("p", 501)  # one entry in total
    node = await edge.start()
    await node.gate("concert", mode="single", dates=[10])
    await node.gate("play", mode="single", dates=[20])
    answers = await asyncio.gather(
        *(node.scan(code, gate="concert" if i % 2 else "play", scan_id=f"p-{i}")
          for i in range(N))
    )
    reasons = [a["reason"] for a in answers]
    assert reasons.count("ok") == 1
    assert set(reasons) <= {"ok", "already_used", "entries_exhausted"}


async def test_many_tickets_at_once_all_admitted(edge, venue):
    codes = [venue.add_ticket(f"t{i}") for i in range(N)]
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    answers = await asyncio.gather(*(node.scan(c) for c in codes))
    assert [a["reason"] for a in answers] == ["ok"] * N
    assert sorted(a["ticket"]["id"] for a in answers) == sorted(venue.ids.values())


async def test_same_scan_id_concurrently_one_log_entry(edge, venue):
    code = venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    answers = await asyncio.gather(*(node.scan(code, scan_id="dup") for _ in range(N)))
    assert all(a == answers[0] for a in answers)
    assert answers[0]["reason"] == "ok"
    status, body = await node.call("GET", "/api/v1/status")
    assert status == 200
    assert body["scans"]["logged"] == 1
    assert await metric(node, "ok") == 1


async def test_more_in_flight_scans_than_lmdb_reader_slots(edge, venue):
    """300 scans waiting for their commits at once (LMDB has 126 reader slots)."""
    import aiohttp

    codes = [venue.add_ticket(f"t{i}") for i in range(30)]
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        node.session, default = session, node.session
        try:
            answers = await asyncio.gather(
                *(node.scan(codes[i % 30], scan_id=f"r-{i}") for i in range(300)))
        finally:
            node.session = default
    reasons = [a["reason"] for a in answers]
    assert reasons.count("ok") == 30
    assert reasons.count("already_used") == 270
