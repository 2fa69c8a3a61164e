"""``python -m core bench-snapshot``: time a large venue's snapshot over HTTP.

Fills a data directory with one venue of N tickets (rows inserted with executemany; the
codes are synthetic, not signed, since only their digests travel in a snapshot), starts
``python -m core serve`` on 127.0.0.1 in a subprocess, streams
``GET /api/v1/venues/{venue}/snapshot`` and checks it with ``SnapshotReader``. Prints one
JSON object. Reuses the rows when the directory already holds them.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Final

import aiohttp

from core import feed, keys
from core.store import DB_FILENAME, connect, migrate, transaction
from sync.codes import code_digest
from sync.snapshot import SnapshotReader

VENUE: Final = "Bench Arena"
TOKEN: Final = "bench-admin-token"
INSERT_BATCH: Final = 50_000


def fill(data: Path, tickets: int) -> float:
    """Insert *tickets* rows for the bench venue; return seconds spent (0 if present)."""
    data.mkdir(parents=True, exist_ok=True)
    conn = connect(data / DB_FILENAME)
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        migrate(conn)
        with transaction(conn) as tx:
            keys.ensure_key(tx)
            venue = feed.ensure_venue(tx, VENUE)
            have = int(tx.scalar("SELECT COUNT(*) FROM tickets WHERE venue_id = ?", (venue,)))
            if have >= tickets:
                return 0.0
            tx.exec("DELETE FROM tickets WHERE venue_id = ?", (venue,))
            tx.exec(
                "INSERT INTO events (id, venue_id, name, currency, created_at)"
                " VALUES (1, ?, 'Bench', 'CHF', 0) ON CONFLICT DO NOTHING",
                (venue,),
            )
            tx.exec(
                "INSERT INTO dates (id, event_id, starts_at, ends_at, doors_open, day)"
                " VALUES (1, 1, 2000000000, 2000010000, 1999996400, 738000)"
                " ON CONFLICT DO NOTHING"
            )
            tx.exec(
                "INSERT INTO zones (id, event_id, name, capacity) VALUES (1, 1, 'All', ?)"
                " ON CONFLICT DO NOTHING",
                (tickets,),
            )
        started = time.perf_counter()
        for first in range(1, tickets + 1, INSERT_BATCH):
            last = min(first + INSERT_BATCH, tickets + 1)
            rows = [
                (i, venue, f"BENCH{i:012d}", code_digest(f"BENCH{i:012d}"), f"O{i // 4:07d}")
                for i in range(first, last)
            ]
            with transaction(conn) as tx:
                tx.many(
                    "INSERT INTO tickets (id, kind, status, venue_id, event_id, date_id, zone_id,"
                    " rate_id, price, code, digest, key_id, channel, sold, order_id, order_number,"
                    " holder, media, dates, created_at)"
                    " VALUES (?, 0, 0, ?, 1, 1, 1, NULL, '50.00', ?, ?, 1, 0, 1, NULL, ?,"
                    " 'Bench Holder', '', '', 0)",
                    rows,
                )
        return time.perf_counter() - started
    finally:
        conn.close()


async def run_bench(data: Path, tickets: int) -> dict[str, Any]:
    fill_s = fill(data, tickets)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "CORE_ADMIN_TOKEN": TOKEN}
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "core",
        "serve",
        "--data",
        str(data),
        "--port",
        str(port),
        "--jobs-interval",
        "0",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
            for _ in range(100):
                try:
                    async with s.get(url + "/api/v1/status") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
            started = time.perf_counter()
            buf = bytearray()
            async with s.get(f"{url}/api/v1/venues/{VENUE}/snapshot") as resp:
                resp.raise_for_status()
                first_byte = time.perf_counter() - started
                async for chunk in resp.content.iter_chunked(1 << 20):
                    buf += chunk
            stream_s = time.perf_counter() - started
    finally:
        server.terminate()
        await server.wait()
    reader = SnapshotReader(io.BytesIO(bytes(buf)))
    count = sum(len(batch) for batch in reader.batches())
    return {
        "bench": "core_snapshot",
        "tickets": count,
        "bytes": len(buf),
        "fill_s": round(fill_s, 2),
        "first_byte_s": round(first_byte, 3),
        "snapshot_s": round(stream_s, 2),
        "records_per_s": round(count / stream_s),
    }
