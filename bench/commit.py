"""What one durable group commit costs on this disk: LMDB against the scan journal.

``python -m bench commit --scans 1,3,9 --commits 400``

The same scan rows (a log entry, a new state for a random ticket among --tickets already
scanned, a remembered answer) committed *--commits* times, *k* scans a commit, in a
scratch directory under --work: once as the node stored scans before the journal (one
synced LMDB transaction: every dirtied page written, two flushes), once as it does now
(``edge.journal.Journal.append``: one sequential write, one flush). One process pinned to
one core; ``cpu_us`` counts the kernel's work for the flushes too. Run it on venue
hardware before trusting the dev VM's figures (``bench/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import emit, note, pin

ENTRY = b"e" * 110
"""About a msgpack ``LogEntry``'s size."""
ANSWER = b"a" * 60
STATE = b"s" * 40


def measure(commit: Callable[[], None], n: int) -> dict[str, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        commit()
    return {"cpu_us": round((time.process_time() - cpu0) / n * 1e6, 1),
            "wall_ms": round((time.perf_counter() - wall0) / n * 1e3, 3)}


def run(folder: Path, levels: list[int], commits: int, tickets: int, seed: int
        ) -> list[dict[str, Any]]:
    from edge.index import Index, u64
    from edge.journal import Journal, JournalRow, frame
    from edge.scanlog import ScanWrites, put_rows

    rng = random.Random(seed)
    index = Index(folder / "lmdb")
    seq = 0
    try:
        with index.env.begin(write=True) as txn:  # a venue some way into its evening
            for ident in rng.sample(range(1, 10 * tickets), tickets):
                txn.put(u64(ident), STATE, db=index.state)
        journal, _start = Journal.create(folder, 16 << 20, 0)
        out: list[dict[str, Any]] = []
        for k in levels:
            def rows() -> list[JournalRow]:
                nonlocal seq
                batch = []
                for _ in range(k):
                    seq += 1
                    batch.append((b"dev-1-%010d" % seq, ENTRY, ANSWER,
                                  rng.randrange(1, 10 * tickets), STATE))
                return batch

            def in_lmdb() -> None:
                writes = ScanWrites(rows())
                writes.first_seq = seq - k + 1
                with index.env.begin(write=True) as txn:  # as the node did before
                    put_rows(txn, index, writes)

            def in_journal() -> None:
                batch = rows()
                first = seq - k + 1
                journal.append(first, frame(journal.epoch, first, batch))
                journal.release(journal.unapplied_bytes)  # as if stored meanwhile

            lmdb_cost = measure(in_lmdb, commits)
            journal_cost = measure(in_journal, commits)
            note(f"commit: {k} scans: LMDB {lmdb_cost['cpu_us']} us CPU, "
                 f"{lmdb_cost['wall_ms']} ms; journal {journal_cost['cpu_us']} us CPU, "
                 f"{journal_cost['wall_ms']} ms")
            out.append({"scans": k, "lmdb": lmdb_cost, "journal": journal_cost,
                        "cpu_ratio": round(journal_cost["cpu_us"] / lmdb_cost["cpu_us"], 3)})
        journal.close()
        return out
    finally:
        index.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scans", default="1,3,9", help="scans per commit, comma-separated")
    parser.add_argument("--commits", type=int, default=400, help="per level and store")
    parser.add_argument("--tickets", type=int, default=300_000,
                        help="tickets with a scan state already")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("bench-data"),
                        help="where the scratch directory goes (the disk to measure)")


def main(args: argparse.Namespace) -> int:
    pin(0, 0)
    levels = [int(c) for c in args.scans.split(",") if c.strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=args.work, prefix="commit-"))
    try:
        levels_out = run(folder, levels, args.commits, args.tickets, args.seed)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    emit({"tickets": args.tickets, "commits": args.commits, "levels": levels_out})
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.commit", description=__doc__)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
