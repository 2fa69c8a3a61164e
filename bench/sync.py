"""Sync: a node bootstrapping N tickets from a real core, then change propagation.

``python -m bench sync --tickets N [--changes K]`` fills a core data directory with one
venue of N tickets (``core.benchsnap.fill``, reused when present), starts ``python -m
core serve`` and ``python -m edge serve --core ...`` as processes on 127.0.0.1, and
times:

- ``bootstrap_s``: edge start until its status shows all N records at the core's head
  (snapshot download + import + first feed poll);
- ``resync_after_outage_s``: the core killed, scans taken at the node meanwhile, the
  core restarted: from the core answering again to the node's outbox being empty;
- ``propagation_p50_ms`` / ``p99``: for K cancellations made one at a time through the
  core's API, from the cancel's answer until the node refuses the ticket as
  ``cancelled``. The node is probed with real scans every 2 ms on a ``multi`` gate
  (so the probes before the change admit again and change nothing that matters);
- ``online`` / ``offline``: scans at ``--load-rate`` for ``--load-seconds`` (open
  loop, ``bench.rate``) while the node uploads them to the core, then the same with
  the core stopped: the scan latency the upload costs, and the index transactions
  (``applies_per_s``, ``barriers_per_s``) each state makes. With ``--peer``, a second
  node scans the same tickets at the same rate meanwhile (``online_peer``): its
  admissions reach the first node through the feed.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench.rate import fixed_rate
from bench.report import emit, note, percentile
from bench.scan import _line, free_port, metric_value, metrics_text

TOKEN = "bench-admin-token"
VENUE = "Bench Arena"
PROBE_INTERVAL_S = 0.002
PROPAGATION_TIMEOUT_S = 10.0
LOAD_TICKETS = 500
LOAD_CONNECTIONS = 64
_PER_S = {"commits_per_s": "edge_commits_total", "applies_per_s": "edge_journal_applies_total",
          "barriers_per_s": "edge_journal_barriers_total"}


async def _load(args: argparse.Namespace, edge_url: str, bodies: list[bytes],
                label: str) -> dict[str, Any]:
    """Scans at ``--load-rate`` on the node (in a thread: ``fixed_rate`` runs its own
    loop); the latency figures and the node's commits and index transactions per s."""
    before = await asyncio.to_thread(metrics_text, edge_url, TOKEN)
    port = int(edge_url.rsplit(":", 1)[1])
    result = await asyncio.to_thread(
        fixed_rate, "127.0.0.1", port, TOKEN, bodies, args.load_rate, args.load_seconds,
        LOAD_CONNECTIONS, label, True)
    after = await asyncio.to_thread(metrics_text, edge_url, TOKEN)
    took = result["elapsed_s"] or args.load_seconds
    return {
        **{k: result[k] for k in ("achieved_per_s", "p50_ms", "p99_ms", "max_ms",
                                  "sendlag_p99_ms", "errors", "reasons")},
        **{k: round((metric_value(after, name) - metric_value(before, name)) / took, 1)
           for k, name in _PER_S.items()},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the core's filled data here (reused across runs)")
    parser.add_argument("--load-rate", type=float, default=1000.0,
                        help="scans/s of the online and offline load phases")
    parser.add_argument("--load-seconds", type=float, default=5.0,
                        help="length of each load phase (0: none)")
    parser.add_argument("--peer", action="store_true",
                        help="a second node scans the same tickets at the same rate during "
                        "the online phase (its admissions reach the first through the feed)")


async def _wait(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes],
                timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: process exited")
        try:
            async with session.get(url + "/api/v1/status",
                                   headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.01)
    raise SystemExit(f"{url} not ready in {timeout} s")


async def _wait_admits(http: aiohttp.ClientSession, edge_url: str, code: str) -> None:
    """Until the node admits *code* at the probe gate (its order has reached it)."""
    deadline = time.monotonic() + 30
    tries = 0
    answer: Any = None
    while time.monotonic() < deadline:
        tries += 1
        async with http.post(edge_url + "/api/v1/scans", json={
            "scan_id": f"load-ready-{tries}", "code": code, "gate": "probe"}) as resp:
            answer = await resp.json()
            if answer.get("result") == "accepted":
                return
        await asyncio.sleep(0.01)
    raise SystemExit(f"the load order did not reach the node in 30 s: {answer}")


async def _until_uploaded(http: aiohttp.ClientSession, edge_url: str, what: str, *,
                          connected: bool = False) -> None:
    """Until the node's outbox is empty (and, if *connected*, it sees the core again),
    polled every 5 ms, 30 s at most."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        async with http.get(edge_url + "/api/v1/status") as resp:
            sync = (await resp.json())["sync"]
        if sync["outbox"] == 0 and (sync["connected"] or not connected):
            return
        await asyncio.sleep(0.005)
    raise SystemExit(f"the node did not upload {what} in 30 s")


async def _run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from core.benchsnap import fill

    filled = work / "core"
    fill_s = fill(filled, args.tickets)
    if fill_s:
        note(f"sync: filled {args.tickets} tickets in {fill_s:.1f} s")
    # Each run on a copy: what a run sells and scans (thousands of admissions in the
    # load phases) would otherwise make every later run's bootstrap replay them.
    core_data = work / "core-run"
    shutil.rmtree(core_data, ignore_errors=True)
    shutil.copytree(filled, core_data)
    node_data = work / "node"
    shutil.rmtree(node_data, ignore_errors=True)
    core_port, edge_port = free_port(), free_port()
    core_url, edge_url = f"http://127.0.0.1:{core_port}", f"http://127.0.0.1:{edge_port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    procs: list[subprocess.Popen[bytes]] = []
    log = (work / "sync-bench.log").open("ab")
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "core", "serve", "--data", str(core_data), "--port",
             str(core_port), "--admin-token", TOKEN, "--jobs-interval", "0"],
            stdout=log, stderr=log))
        async with aiohttp.ClientSession(headers=headers) as http:
            await _wait(http, core_url, procs[0])

            async def call(method: str, path: str, body: Any = None) -> Any:
                async with http.request(method, core_url + path, json=body) as resp:
                    data = await resp.json(content_type=None)
                    if resp.status >= 400:
                        raise SystemExit(f"{path}: {resp.status} {data}")
                    return data

            node_token = (await call("POST", f"/api/v1/venues/{VENUE}/tokens",
                                     {"name": "bench"}))["token"]

            async def start_edge(data: Path, port: int, node_id: str) -> None:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "edge", "serve", "--data", str(data), "--port",
                     str(port), "--admin-token", TOKEN, "--core", core_url, "--core-token",
                     node_token, "--venue", VENUE, "--node-id", node_id,
                     "--log-level", "WARNING"],
                    stdout=log, stderr=log))
                await _wait(http, f"http://127.0.0.1:{port}", procs[-1], timeout=120)

            async def probe_gate(url: str) -> None:  # admits every scan, again and again
                async with http.put(url + "/api/v1/gates/probe", json={"mode": "multi"}) as r:
                    assert r.status == 200, await r.text()

            started = time.monotonic()
            await start_edge(node_data, edge_port, "bench-node")
            while True:
                async with http.get(edge_url + "/api/v1/status") as resp:
                    status = await resp.json()
                if (status["index"]["records"] >= args.tickets
                        and status["sync"]["lag_changes"] == 0):
                    break
                if time.monotonic() - started > 120:
                    raise SystemExit("node did not catch up in 120 s")
                await asyncio.sleep(0.01)
            bootstrap_s = time.monotonic() - started

            now = datetime.now(UTC)
            event = await call("POST", "/api/v1/events", {
                "name": "Propagation", "venue": VENUE,
                "dates": [{"start": (now + timedelta(hours=1)).isoformat(),
                           "end": (now + timedelta(hours=4)).isoformat(),
                           "doors_open": (now - timedelta(hours=1)).isoformat()}],
                "zones": [{"name": "Floor", "capacity": args.changes + LOAD_TICKETS}],
                "rates": [{"name": "Full", "price": "10"}],
            })
            order = await call("POST", "/api/v1/orders", {
                "customer": {"name": "Bench"}, "payment": "card", "channel": "online",
                "items": [{"date": event["dates"][0]["id"], "zone": event["zones"][0]["id"],
                           "rate": event["rates"][0]["id"], "quantity": args.changes}]})
            await probe_gate(edge_url)
            probes = 0
            delays: list[float] = []
            for ticket in order["tickets"]:
                await call("POST", f"/api/v1/orders/{order['number']}/cancel",
                           {"tickets": [ticket["id"]]})
                sent = time.monotonic()
                while True:
                    probes += 1
                    async with http.post(edge_url + "/api/v1/scans", json={
                        "scan_id": f"probe-{probes}", "code": ticket["code"], "gate": "probe",
                    }) as resp:
                        answer = await resp.json()
                    if answer["reason"] == "cancelled":
                        delays.append((time.monotonic() - sent) * 1000)
                        break
                    if time.monotonic() - sent > PROPAGATION_TIMEOUT_S:
                        raise SystemExit(f"cancellation not seen in {PROPAGATION_TIMEOUT_S} s")
                    await asyncio.sleep(PROBE_INTERVAL_S)
            load: dict[str, Any] = {}
            if args.load_seconds > 0:
                loaded = await call("POST", "/api/v1/orders", {
                    "customer": {"name": "Load"}, "payment": "card", "channel": "online",
                    "items": [{"date": event["dates"][0]["id"],
                               "zone": event["zones"][0]["id"],
                               "rate": event["rates"][0]["id"], "quantity": LOAD_TICKETS}]})
                # A multi gate admits every scan again: each is logged and uploaded.
                bodies = [_line(t["code"], "probe") for t in loaded["tickets"]]
                await _wait_admits(http, edge_url, loaded["tickets"][-1]["code"])
                if args.peer:
                    peer_port = free_port()
                    peer_url = f"http://127.0.0.1:{peer_port}"
                    peer_data = work / "peer"
                    shutil.rmtree(peer_data, ignore_errors=True)
                    await start_edge(peer_data, peer_port, "bench-peer")
                    await probe_gate(peer_url)
                    await _wait_admits(http, peer_url, loaded["tickets"][-1]["code"])
                    load["online"], load["online_peer"] = await asyncio.gather(
                        _load(args, edge_url, bodies, "on"),
                        _load(args, peer_url, bodies, "peer"))
                    procs[-1].send_signal(signal.SIGTERM)
                    procs[-1].wait(30)
                else:
                    load["online"] = await _load(args, edge_url, bodies, "on")
                # The outage's figure counts the outage's scans alone.
                await _until_uploaded(http, edge_url, "the online phase's scans")
            # Outage: the core is killed, the node admits on its own, the core comes
            # back; time from the core answering again to the node's outbox being empty.
            procs[0].kill()
            procs[0].wait()
            outage_scans = 0
            for ticket in order["tickets"][: args.changes // 2]:
                outage_scans += 1
                async with http.post(edge_url + "/api/v1/scans", json={
                    "scan_id": f"outage-{outage_scans}", "code": ticket["code"],
                    "gate": "probe"}) as resp:
                    assert resp.status == 200, await resp.text()
            procs[0] = subprocess.Popen(
                [sys.executable, "-m", "core", "serve", "--data", str(core_data), "--port",
                 str(core_port), "--admin-token", TOKEN, "--jobs-interval", "0"],
                stdout=log, stderr=log)
            await _wait(http, core_url, procs[0])
            back = time.monotonic()
            await _until_uploaded(http, edge_url, "the outage's scans", connected=True)
            resync_s = time.monotonic() - back
            if args.load_seconds > 0:
                procs[0].kill()
                procs[0].wait()
                load["offline"] = await _load(args, edge_url, bodies, "off")
        delays.sort()
        return {
            "outage_scans": outage_scans,
            "resync_after_outage_s": round(resync_s, 3),
            "tickets": args.tickets,
            "bootstrap_s": round(bootstrap_s, 2),
            "changes": len(delays),
            "propagation_p50_ms": round(percentile(delays, 50), 1),
            "propagation_p99_ms": round(percentile(delays, 99), 1),
            "propagation_max_ms": round(delays[-1], 1) if delays else 0.0,
            "probes": probes,
            **load,
        }
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        log.close()


def main(args: argparse.Namespace) -> int:
    if args.load_seconds > 0 and not 0 < args.load_rate < float("inf"):
        raise SystemExit("--load-rate must be a positive number of scans/s")
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(_run(args, args.work))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
            result = asyncio.run(_run(args, Path(tmp)))
    emit(result)
    return 0
