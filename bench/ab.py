"""Paired A/B of two node configurations at a fixed open-loop rate.

``python -m bench ab --rate 2000 --seconds 8 --pairs 3 --b="--commit-interval-ms 3"``

Runs of one ``bench scan`` differ by 15-40% on a shared VM, far more than most changes
to the node: a single run before and after a change proves nothing. This benchmark
alternates the two configurations (A, B, A, B, ...), each run on a fresh copy of the
same imported index, and reports every run and each side's median, so that a
difference is believed only when it shows in every pair. Per run: the node's CPU share
of its core, answer latency percentiles (from the scheduled send time, as ``bench
scan``'s half-rate phase), the group commits, and the CPU other processes used.
*--a* and *--b* are extra ``edge serve`` arguments; write them ``--b=ARGS``, since a
value that begins with "-" reads as an option otherwise.

``--a-tree DIR`` / ``--b-tree DIR`` run that side's node from another checkout (``git
worktree add DIR COMMIT``): the same A/B across two commits, for a change that has no
flag, e.g. ``--b-tree ../before``. Both read the index this checkout's ``edge import``
built, so the two must share its format.

``--cold`` starts every node on an index none of whose pages is in the page cache (a
node after a reboot) and measures from its first scan, without the warm-up second:
``python -m bench ab --cold --a=--no-warm --rate 2000 --seconds 4`` shows what the
node's page-cache warming at start (``edge.index.Warmer``) is worth.
"""

from __future__ import annotations

import argparse
import random
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.rate import fixed_rate
from bench.report import emit, note, pin
from bench.scan import (
    ADMIN_TOKEN_BYTES,
    STEAL_WARN_CORES,
    commit_shares,
    copy_index,
    dataset_for,
    http,
    load_pools,
    metric_commits,
    open_loop,
    put_gates,
    scan_lines,
    start_node,
    top_up_extras,
    wait_ready,
)

WARMUP_S = 1.0
FIGURES = ("server_cpu", "p50_ms", "p99_ms", "commits_per_s")
CONDITIONS = ("foreign_cores", "steal_cores", "sendlag_p99_ms", "disk_write_kb_per_request",
              "disk_writes_per_request")
"""What else each run reports: the machine's noise and what the node's disk was sent."""


def one_run(
    pristine: Path, tmp: Path, extra: list[str], gates: dict[str, Any], lines: list[bytes],
    args: argparse.Namespace, label: str, tree: Path | None = None,
) -> dict[str, Any]:
    """A fresh node on a copy of *pristine*, warmed, then *lines* at ``args.rate``."""
    if args.cold:
        # Kept until the end: a copy on the blocks the previous one freed may be read
        # from the host's cache of them, which is not what a reboot leaves.
        data = tmp / f"data-{label}"
    else:
        data = tmp / "data"
        shutil.rmtree(data, ignore_errors=True)
    copy_index(pristine, data, cached=not args.cold)
    token = secrets.token_urlsafe(ADMIN_TOKEN_BYTES)
    node, url = start_node(f"edge-{label}", data, token, tmp, 0, extra, tree)
    try:
        wait_ready(node, url + "/api/v1/status", token, 60.0)
        put_gates(url, token, gates)
        warm = 0 if args.cold else int(WARMUP_S * args.rate)
        if warm:
            fixed_rate("127.0.0.1", int(url.rsplit(":", 1)[1]), token, lines[:warm],
                       args.rate, WARMUP_S, args.rate_connections, f"w{label}")
        commits0 = metric_commits(url, token)
        t0 = time.perf_counter()
        result = open_loop(url, node.popen.pid, token, lines[warm:], args.rate, args, label)
        took = time.perf_counter() - t0
        commits = commit_shares(commits0, metric_commits(url, token))
        _, raw = http("GET", url + "/api/v1/status", token)
        result["page_cache_warm"] = msgspec.json.decode(raw)["index"]["page_cache_warm"]
    finally:
        node.stop()
    result["commits_per_s"] = round(commits["count"] / took, 1)
    keep = (*FIGURES, *CONDITIONS, "achieved_per_s", "errors", "page_cache_warm")
    return {k: result[k] for k in keep}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="scans/s, open loop")
    parser.add_argument("--seconds", type=float, default=8.0, help="per run")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--cold", action="store_true",
        help="start each node with none of its index in the page cache (after a reboot); "
        "no warm-up: measure from the first scan",
    )
    parser.add_argument(
        "--a", default="", help="extra `edge serve` arguments of side A; write --a=ARGS"
    )
    parser.add_argument(
        "--b", default="", help="extra `edge serve` arguments of side B; write --b=ARGS"
    )
    for side in ("a", "b"):
        parser.add_argument(
            f"--{side}-tree", type=Path, default=None,
            help=f"a checkout whose node side {side.upper()} runs (default: this one)",
        )
    parser.add_argument(
        "--rate-connections", type=int, default=256, help="connection pool of the load"
    )
    parser.add_argument(
        "--arrivals",
        choices=("even", "poisson"),
        default="even",
        help="sends evenly spaced (default), or Poisson arrivals (many "
        "independent devices: random clusters)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--work", type=Path, default=Path("bench-data"), help="datasets and run files"
    )


def main(args: argparse.Namespace) -> int:
    pinned = pin(0, 1)  # this process (the load) on CPU 1; the node on CPU 0
    sides = {"a": shlex.split(args.a), "b": shlex.split(args.b)}
    trees: dict[str, Path | None] = {}
    for side in sides:
        tree = getattr(args, f"{side}_tree")
        if tree is not None and not (tree / "edge" / "__main__.py").is_file():
            raise SystemExit(f"--{side}-tree {tree}: no edge package there")
        trees[side] = tree.resolve() if tree is not None else None
    args.work = args.work.resolve()  # the nodes of another tree run from there
    args.work.mkdir(parents=True, exist_ok=True)
    snapshot, codes, gates_path, _info = dataset_for(args.work, args.tickets, args.seed)
    gates: dict[str, Any] = msgspec.json.decode(gates_path.read_bytes())
    pools = load_pools(codes, gates, args.seed)
    rng = random.Random(args.seed)
    per_run = int(args.rate * (WARMUP_S + args.seconds) * 1.05) + 100
    # The dataset's 2,000 signed-but-not-in-snapshot codes last ~5 pairs at 2,800/s.
    top_up_extras(pools, _info, args.tickets, args.seed, per_run * args.pairs)
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    warnings: list[str] = []
    if not pinned:
        warnings.append("one CPU: the node and the load share it")
    with tempfile.TemporaryDirectory(dir=args.work, prefix="ab-") as name:
        tmp = Path(name)
        pristine = tmp / "pristine"
        subprocess.run(
            [sys.executable, "-m", "edge", "import", "--data", str(pristine), str(snapshot)],
            check=True, capture_output=True,
        )
        for pair in range(args.pairs):
            # The same scans for both sides of a pair (each run starts from the same
            # index), fresh ones for the next pair.
            lines = scan_lines(pools, per_run, rng)
            for side, extra in sides.items():
                run = one_run(pristine, tmp, extra, gates, lines, args, f"{side}{pair}",
                              trees[side])
                runs[side].append(run)
                where = f" in {trees[side]}" if trees[side] is not None else ""
                note(f"ab: pair {pair} {side.upper()} {getattr(args, side)!r}{where}: "
                     + ", ".join(f"{k} {run[k]}" for k in (*FIGURES, *CONDITIONS)))
                if (run["foreign_cores"] > 0.1 or run["steal_cores"] > STEAL_WARN_CORES
                        or run["errors"]):
                    warnings.append(f"pair {pair} {side.upper()}: foreign_cores "
                                    f"{run['foreign_cores']}, steal_cores {run['steal_cores']}, "
                                    f"errors {run['errors']}")
    medians = {
        side: {k: round(statistics.median(r[k] for r in rs), 3) for k in FIGURES}
        for side, rs in runs.items()
    }
    emit({"rate": args.rate, "seconds": args.seconds, "tickets": args.tickets,
          "a": args.a, "b": args.b,
          "a_tree": str(trees["a"]) if trees["a"] else None,
          "b_tree": str(trees["b"]) if trees["b"] else None,
          "median": medians, "runs": runs, "warnings": warnings})
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
