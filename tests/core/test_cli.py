"""The command line: serve and demo as real subprocesses; the import boundary."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from datetime import datetime

import aiohttp

from tests.core.conftest import VENUE, event_body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_then_demo_from_the_command_line(tmp_path):
    port = free_port()
    env = {**os.environ, "CORE_ADMIN_TOKEN": "cli-admin-token"}
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "core",
        "serve",
        "--data",
        str(tmp_path),
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(url + "/api/v1/status") as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            demo = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "core",
                "demo",
                "--core",
                url,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(demo.communicate(), 30)
            assert demo.returncode == 0, err.decode()
            summary = json.loads(out)
            assert set(summary["orders"]) == {"card", "invoice", "pass"}
            assert summary["node_token"].startswith("gkn_")
            async with session.get(url + "/api/v1/status") as resp:
                status = await resp.json()
            assert status["tickets"] == 11 and status["orders"] == 3
    finally:
        server.terminate()
        _out, err = await asyncio.wait_for(server.communicate(), 10)
    assert server.returncode == 0, err.decode()
    assert b"Traceback" not in err


def test_jobs_refuses_a_directory_without_a_database(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "core", "jobs", "--data", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "no core database" in out.stderr


def test_core_never_imports_edge():
    code = (
        "import sys, core.app, core.cli, core.benchsnap, core.demo; "
        "print([m for m in sys.modules if m == 'edge' or m.startswith('edge.')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_sync_wire_and_reconcile_stay_pure():
    code = (
        "import sys, sync.wire, sync.reconcile; "
        "heavy = ('aiohttp', 'lmdb', 'zeroconf', 'core', 'edge'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "[]", out.stderr


async def test_moving_a_date_reaches_the_feed(core):
    event = await core.ok("POST", "/api/v1/events", event_body())
    head = (await core.ok("GET", f"/api/v1/venues/{VENUE}/changes?after=0"))["cursor"]
    date_id = event["dates"][0]["id"]
    moved = await core.ok(
        "PATCH", f"/api/v1/dates/{date_id}", {"start": "2030-06-10T21:00:00+02:00"}
    )
    assert moved["start"] == "2030-06-10T19:00:00+00:00"
    assert moved["doors_open"] == "2030-06-10T18:00:00+00:00"
    batch = await core.ok("GET", f"/api/v1/venues/{VENUE}/changes?after={head}")
    (change,) = batch["changes"]
    assert change["type"] == "catalog_changed"
    start = datetime.fromisoformat("2030-06-10T21:00:00+02:00").timestamp()
    assert change["catalog"]["dates"][0][2:5] == [start, start + 2 * 3600, start - 3600]
    status, err = await core.call(
        "PATCH", f"/api/v1/dates/{date_id}", {"end": "2030-06-10T18:00:00+02:00"}
    )
    assert (status, err["error"]) == (400, "bad_dates")
    added = await core.ok(
        "POST",
        f"/api/v1/events/{event['id']}/dates",
        {"start": "2030-07-01T20:00:00+02:00", "end": "2030-07-01T23:00:00+02:00"},
    )
    assert len(added["dates"]) == 2
    avail = await core.ok("GET", f"/api/v1/dates/{added['dates'][1]['id']}/availability")
    assert [z["available"] for z in avail["zones"]] == [100, 10]
