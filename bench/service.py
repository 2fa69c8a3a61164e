"""CPU per scan of the node's own work, without HTTP: ``ScanService`` on a real index.

``python -m bench service --tickets N --scans S --concurrency 1,8,64``

The node's scan path minus aiohttp: the benchmark dataset imported into a fresh LMDB
directory, the real ``GroupCommitter`` (writer and applier threads, the scan journal,
fsynced commits; ``--journal-mb 0`` without the journal), and *S* scans
of ``bench scan``'s mix sent by *C* concurrent callers, each awaiting its answer and
encoding it as the API would. One process on one pinned core, so ``cpu_us`` (all
threads, kernel work of the fsyncs included) is what the node spends per scan beside
the HTTP server's own cost; ``loop_us`` is the event loop thread's share. Far less
noisy than an HTTP run, it is the figure to watch when changing the scan path.
Concurrency 1 pays a whole commit per scan; 64 is what a saturated node sees.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from bench.report import ForeignCpu, disk_per_request, disk_writes, emit, note, pin
from bench.scan import copy_index, dataset_for, load_pools, scan_lines

WARMUP_SCANS = 1000


async def measure(
    data: Path, gates: dict[str, Any], bodies: list[bytes], conc: int, journal_bytes: int
) -> dict[str, Any]:
    from edge.api import ScanBody, render
    from edge.index import Index
    from edge.messages import table_for
    from edge.model import GateProfile
    from edge.scan import ScanService
    from edge.scanlog import GroupCommitter

    index = Index(data)
    committer = GroupCommitter(index, asyncio.get_running_loop(), journal_bytes=journal_bytes)
    committer.start()
    try:
        service = ScanService(index, committer)
        for name, profile in gates.items():
            await service.put_gate(name, msgspec.convert(profile, GateProfile))
        messages = table_for(None)
        decoder = msgspec.json.Decoder(ScanBody)
        encoder = msgspec.json.Encoder()
        reqs = [decoder.decode(b) for b in bodies]

        async def one(i: int) -> bytes:
            req = reqs[i]
            answer = await service.scan(req)
            return encoder.encode(render(req.scan_id, answer, messages))

        async def run(start: int, stop: int) -> None:
            for i in range(start, stop, conc):
                await asyncio.gather(*(one(j) for j in range(i, min(i + conc, stop))))

        await run(0, WARMUP_SCANS)
        gc.collect()
        gc.freeze()
        commits = committer.commits
        foreign = ForeignCpu()
        written0 = disk_writes(data)
        cpu0, loop0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
        await run(WARMUP_SCANS, len(reqs))
        # The journaled scans stored in the index too: the applier's work counts.
        await committer.flush()
        cpu = time.process_time() - cpu0
        loop_cpu = time.thread_time() - loop0
        wall = time.perf_counter() - wall0
        n = len(reqs) - WARMUP_SCANS
        disk = disk_per_request(data, written0, n)
        commits = committer.commits - commits - 1  # not the flush
        return {
            "concurrency": conc,
            "scans": n,
            "cpu_us": round(cpu / n * 1e6, 1),
            "loop_us": round(loop_cpu / n * 1e6, 1),
            "wall_us": round(wall / n * 1e6, 1),
            "scans_per_commit": round(n / commits, 1) if commits else None,
            "foreign_cores": foreign.cores(),
            "steal_cores": foreign.stolen(),
            # What the commits sent to the disk (None on tmpfs): LMDB rewrites every
            # page a transaction touches, so random keys cost whole pages.
            "disk_write_kb": disk[0] if disk is not None else None,
            "disk_writes": disk[1] if disk is not None else None,
        }
    finally:
        await committer.stop()
        index.close()


def scan_id(kind: str, conc: int, i: int, rng: random.Random) -> bytes:
    """A device's scan_id: ``ordered`` (device and counter, or time-ordered ids such as
    UUIDv7 or ULID: the node's ``answers`` db gets neighbouring keys) or ``uuid``
    (random UUIDv4: every scan lands on its own leaf page of that db)."""
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode()
    return b"svc-%d-%08d" % (conc, i)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--scans", type=int, default=20_000, help="per concurrency level")
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated levels")
    parser.add_argument("--scan-ids", choices=("ordered", "uuid"), default="ordered",
                        help="the scan_ids devices send (see scan_id)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--journal-mb", type=float, default=None,
                        help="the scan journal's size (default: the node's; 0: none)")
    parser.add_argument(
        "--work", type=Path, default=Path("bench-data"), help="datasets and run files"
    )


def main(args: argparse.Namespace) -> int:
    import uvloop

    pin(0, 0)
    from edge.cli import GC_THRESHOLDS, SWITCH_INTERVAL_S

    # As ``python -m edge serve`` runs: the same GIL switch interval and GC thresholds.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.set_threshold(*GC_THRESHOLDS)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    from edge.scanlog import JOURNAL_BYTES

    journal_bytes = (JOURNAL_BYTES if args.journal_mb is None
                     else int(args.journal_mb * (1 << 20)))
    args.work.mkdir(parents=True, exist_ok=True)
    snapshot, codes, gates_path, _info = dataset_for(args.work, args.tickets, args.seed)
    gates: dict[str, Any] = msgspec.json.decode(gates_path.read_bytes())
    pools = load_pools(codes, gates, args.seed)
    rng = random.Random(args.seed)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.work, prefix="service-") as tmp:
        pristine = Path(tmp) / "pristine"
        subprocess.run(
            [sys.executable, "-m", "edge", "import", "--data", str(pristine), str(snapshot)],
            check=True,
            capture_output=True,
        )
        for conc in levels:
            data = Path(tmp) / f"c{conc}"
            copy_index(pristine, data)
            count = WARMUP_SCANS + args.scans
            bodies = [
                b'{"scan_id":"%s",' % scan_id(args.scan_ids, conc, i, rng) + line
                for i, line in enumerate(scan_lines(pools, count, rng)[:count])
            ]
            note(f"service: {len(bodies)} scans at concurrency {conc}")
            results.append(uvloop.run(measure(data, gates, bodies, conc, journal_bytes)))
            shutil.rmtree(data)
    for r in results:
        note(
            f"service: concurrency {r['concurrency']}: {r['cpu_us']} us CPU per scan "
            f"({r['loop_us']} on the loop), {r['scans_per_commit']} scans per commit, "
            f"disk {r['disk_write_kb']} KB in {r['disk_writes']} writes per scan"
        )
    emit({"tickets": args.tickets, "scan_ids": args.scan_ids, "journal_bytes": journal_bytes,
          "levels": results})
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.service", description=__doc__)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
