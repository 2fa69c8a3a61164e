"""Paired A/B of two node configurations at a fixed open-loop rate.

``python -m bench ab --rate 2000 --seconds 8 --pairs 3 --a "" --b "--commit-interval-ms 3"``

Runs of one ``bench scan`` differ by 15-40% on a shared VM, far more than most changes
to the node: a single run before and after a change proves nothing. This benchmark
alternates the two configurations (A, B, A, B, ...), each run on a fresh copy of the
same imported index, and reports every run and each side's median, so that a
difference is believed only when it shows in every pair. Per run: the node's CPU share
of its core, answer latency percentiles (from the scheduled send time, as ``bench
scan``'s half-rate phase), the group commits, and the CPU other processes used.
*--a* and *--b* are extra ``edge serve`` arguments.
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
from bench.report import ForeignCpu, cpu_seconds, emit, note, pin
from bench.scan import (
    commit_shares,
    dataset_for,
    free_port,
    http,
    load_pools,
    metric_commits,
    scan_lines,
    start,
    wait_ready,
)

WARMUP_S = 1.0
CONNECTIONS = 256
FIGURES = ("server_cpu", "p50_ms", "p99_ms", "commits_per_s")


def one_run(
    pristine: Path, tmp: Path, extra: list[str], gates: dict[str, Any], lines: list[bytes],
    args: argparse.Namespace, label: str,
) -> dict[str, Any]:
    data = tmp / "data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.copytree(pristine, data)
    token = secrets.token_urlsafe(18)
    port = free_port()
    serve = [sys.executable, "-m", "edge", "serve", "--data", str(data), "--host", "127.0.0.1",
             "--port", str(port), f"--admin-token={token}", "--log-level", "WARNING", *extra]
    node = start(f"edge-{label}", serve, tmp, 0)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(node, url + "/api/v1/status", token, 60.0)
        for name, profile in gates.items():
            status, body = http("PUT", f"{url}/api/v1/gates/{name}", token, profile)
            if status >= 300:
                raise RuntimeError(f"PUT gate {name}: {status} {body[:300]!r}")
        warm = int(WARMUP_S * args.rate)
        fixed_rate("127.0.0.1", port, token, lines[:warm], args.rate, WARMUP_S, CONNECTIONS,
                   f"w{label}")
        commits0 = metric_commits(url, token)
        meter = ForeignCpu()
        cpu0, t0 = cpu_seconds(node.popen.pid), time.perf_counter()
        result = fixed_rate("127.0.0.1", port, token, lines[warm:], args.rate, args.seconds,
                            CONNECTIONS, f"m{label}")
        took = time.perf_counter() - t0
        cpu = cpu_seconds(node.popen.pid) - cpu0
        commits = commit_shares(commits0, metric_commits(url, token))
    finally:
        node.stop()
    return {
        "server_cpu": round(cpu / took, 3),
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "commits_per_s": round(commits["count"] / took, 1),
        "achieved_per_s": result["achieved_per_s"],
        "errors": result["errors"],
        "foreign_cores": meter.cores(),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2000.0, help="scans/s, open loop")
    parser.add_argument("--seconds", type=float, default=8.0, help="per run")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--a", default="", help="extra `edge serve` arguments of side A")
    parser.add_argument("--b", default="", help="extra `edge serve` arguments of side B")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--work", type=Path, default=Path("bench-data"), help="datasets and run files"
    )


def main(args: argparse.Namespace) -> int:
    pin(0, 1)  # this process (the load) on CPU 1; the node on CPU 0
    sides = {"a": shlex.split(args.a), "b": shlex.split(args.b)}
    args.work.mkdir(parents=True, exist_ok=True)
    snapshot, codes, gates_path, _info = dataset_for(args.work, args.tickets, args.seed)
    gates: dict[str, Any] = msgspec.json.decode(gates_path.read_bytes())
    pools = load_pools(codes, gates, args.seed)
    rng = random.Random(args.seed)
    per_run = int(args.rate * (WARMUP_S + args.seconds) * 1.05) + 100
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory(dir=args.work, prefix="ab-") as name:
        tmp = Path(name)
        pristine = tmp / "pristine"
        subprocess.run(
            [sys.executable, "-m", "edge", "import", "--data", str(pristine), str(snapshot)],
            check=True, capture_output=True,
        )
        for pair in range(args.pairs):
            for side, extra in sides.items():
                # Fresh codes for every run: a first entry stays a first entry.
                lines = scan_lines(pools, per_run, rng)
                run = one_run(pristine, tmp, extra, gates, lines, args, f"{side}{pair}")
                runs[side].append(run)
                note(f"ab: pair {pair} {side.upper()} {args.a if side == 'a' else args.b!r}: "
                     + ", ".join(f"{k} {run[k]}" for k in (*FIGURES, "foreign_cores")))
    medians = {
        side: {k: round(statistics.median(r[k] for r in rs), 3) for k in FIGURES}
        for side, rs in runs.items()
    }
    emit({"rate": args.rate, "seconds": args.seconds, "tickets": args.tickets,
          "a": args.a, "b": args.b, "median": medians, "runs": runs})
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
