"""SIGKILL during load: no accepted scan is lost, no single-entry ticket enters twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from edge.importer import import_file
from edge.index import Index
from tests.conftest import TOKEN, free_port
from tests.venue import make_venue

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
TICKETS = 400


def start_node(data: Path, port: int, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    with (data.parent / "node.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "edge", "serve", "--data", str(data), "--port", str(port),
             "--admin-token", TOKEN, "--log-level", "WARNING", *extra],
            stdout=subprocess.DEVNULL, stderr=log,
        )


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "node exited early; see node.log"
        try:
            async with session.get(url + "/api/v1/status", headers=HEADERS) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("node did not become ready")


async def put_main_gate(session: aiohttp.ClientSession, url: str) -> None:
    async with session.put(url + "/api/v1/gates/main", headers=HEADERS,
                           json={"mode": "single", "dates": [10]}) as resp:
        assert resp.status == 200


async def scan(session, url, scan_id, code):
    body = {"scan_id": scan_id, "code": code, "gate": "main"}
    async with session.post(url + "/api/v1/scans", json=body, headers=HEADERS) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


JOURNAL_ONLY = ("--apply-interval-ms", "1000")
"""Most answered scans are only in the journal when the node is killed."""


@pytest.mark.parametrize(("extra", "restart"), [
    ((), ()),  # the journal, stored in the index every 50 ms
    (JOURNAL_ONLY, JOURNAL_ONLY),
    (("--journal-mb", "0"), ("--journal-mb", "0")),  # scans committed straight to the index
    (JOURNAL_ONLY, ("--journal-mb", "0")),  # restarted without the journal: still stored
], ids=["journal", "journal-only", "no-journal", "journal-turned-off"])
async def test_sigkill_mid_load_loses_no_accepted_scan(tmp_path, extra, restart):
    venue = make_venue()
    codes = [venue.add_ticket(f"t{i}") for i in range(TICKETS)]
    data = tmp_path / "node"
    import_file(data, venue.write(tmp_path / "venue.snap"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_node(data, port, extra)
    answered: dict[str, tuple[int, dict]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, url, proc)
            await put_main_gate(session, url)
            # Every ticket scanned twice under distinct scan ids, 32 at a time; kill the
            # node once a good share of answers are out, while scans are in flight.
            jobs = [(f"a{i}", i) for i in range(TICKETS)] + [(f"b{i}", i) for i in range(TICKETS)]
            queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
            for job in jobs:
                queue.put_nowait(job)

            async def worker() -> None:
                while not queue.empty():
                    sid, i = queue.get_nowait()
                    try:
                        answered[sid] = (i, await scan(session, url, sid, codes[i]))
                    except (TimeoutError, aiohttp.ClientError):
                        return
                    if len(answered) >= 300 and proc.poll() is None:
                        os.kill(proc.pid, signal.SIGKILL)

            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(32))), 60)
            proc.wait(10)
            assert proc.returncode == -signal.SIGKILL
            assert 300 <= len(answered) < len(jobs), "the kill must land mid-load"

            proc = start_node(data, port, restart)
            await wait_ready(session, url, proc)
            async with session.get(url + "/api/v1/status", headers=HEADERS) as resp:
                journal = (await resp.json())["commits"]["journal"]
            if "--journal-mb" in restart:
                assert journal is None
                assert not (data / "journal").exists()
            elif "--apply-interval-ms" in extra:
                # The kill came well within a second of the first answers.
                assert journal["recovered_scans"] > 0
            accepted = {sid: i for sid, (i, a) in answered.items() if a["reason"] == "ok"}
            assert accepted
            # Every answered scan_id gets its first answer again, unchanged.
            for sid, (i, first) in answered.items():
                assert await scan(session, url, sid, codes[i]) == first
            # Every ticket answered `ok` is used now; no ticket was admitted twice.
            tickets_ok = list(accepted.values())
            assert len(tickets_ok) == len(set(tickets_ok))
            for i in set(tickets_ok):
                again = await scan(session, url, f"after{i}", codes[i])
                assert again["reason"] == "already_used"
            # Scans lost in flight (never answered) are decided anew, still at most once.
            for sid, i in jobs:
                if sid not in answered:
                    answer = await scan(session, url, sid, codes[i])
                    if answer["reason"] == "ok":
                        assert i not in set(tickets_ok)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_sigterm_stores_every_journaled_scan_in_the_index(tmp_path):
    """A clean stop leaves nothing for the next start to recover: scans answered from
    the journal (stored every second here) are in the index itself once the node has
    exited on SIGTERM."""
    venue = make_venue()
    codes = [venue.add_ticket(f"t{i}") for i in range(50)]
    data = tmp_path / "node"
    import_file(data, venue.write(tmp_path / "venue.snap"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_node(data, port, JOURNAL_ONLY)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, url, proc)
            await put_main_gate(session, url)
            answers = await asyncio.gather(*(scan(session, url, f"s{i}", code)
                                             for i, code in enumerate(codes)))
            assert {a["reason"] for a in answers} == {"ok"}
            async with session.get(url + "/api/v1/status", headers=HEADERS) as resp:
                status = await resp.json()
            assert status["scans"]["logged"] == 50
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    index = Index(data)
    try:
        assert index.counts()["scanlog"] == 50
        assert all(index.state_of(venue.ids[f"t{i}"]).entries == 1 for i in range(50))
    finally:
        index.close()
