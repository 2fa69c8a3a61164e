"""``python -m edge``: serve a node, or import a snapshot into its index offline."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import lmdb
import msgspec
from aiohttp import web

from edge.app import EdgeConfig, build_app, raise_fd_limit, runner_for
from edge.importer import import_file
from edge.model import GateProfile
from edge.retention import DEFAULT_KEEP_DAYS, MAX_KEEP_DAYS
from edge.scanlog import (
    APPLY_INTERVAL_S,
    COMMIT_INTERVAL_S,
    JOURNAL_BYTES,
    MAX_BATCH,
    MAX_COMMIT_INTERVAL_S,
    PACE_BELOW,
    WRITER_SCHED_BATCH,
)
from sync.snapshot import SnapshotError

log = logging.getLogger("edge")
MAX_JOURNAL_MB: Final = 1024
MAX_APPLY_INTERVAL_MS: Final = 1000



def _admin_token(data: Path, given: str | None) -> str:
    token = given or os.environ.get("EDGE_ADMIN_TOKEN")
    if token:
        return token
    path = data / "admin-token"
    if path.exists():
        return path.read_text().strip()
    data.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    log.warning("no admin token given: generated one in %s", path)
    return token


async def _serve(config: EdgeConfig) -> None:
    app = build_app(config)
    log.info("open files allowed: %d", raise_fd_limit())
    runner = runner_for(app, handle_signals=False, shutdown_timeout=5.0)
    await runner.setup()
    # Everything alive now (modules, catalogue, app) lives as long as the process:
    # keep the cyclic GC from walking it again on every young-generation overflow.
    gc.collect()
    gc.freeze()
    # Scans leave almost no cyclic garbage: with the default young threshold (700) the
    # collector ran ~90 times a second under load for ~4% of the CPU and found little.
    gc.set_threshold(*GC_THRESHOLDS)
    site = web.TCPSite(runner, config.host, config.port, backlog=1024, reuse_address=True)
    await site.start()
    log.info("listening on http://%s:%d", config.host, config.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"edge node serving on http://{config.host}:{config.port}", flush=True)
    await stop.wait()
    log.info("stopping: draining in-flight scans")
    await runner.cleanup()


def _from_zero_to(high: float, unit: str) -> Callable[[str], float]:
    """An argparse type: a number from 0 to *high* (nan and inf refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0.0 <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be 0 to {high:g} {unit}")
        return value

    return parse


GC_THRESHOLDS = (10_000, 50, 1_000)
SWITCH_INTERVAL_S = 0.0005
"""How long the loop may keep the GIL while the writer thread waits for it. The writer
needs it twice per group commit (to start, and to hand the batch back after fsync); at
Python's default 5 ms every answer could wait up to 10 ms behind a busy loop."""


class DataDirBusy(Exception):
    """Another node or import holds the data directory."""


@contextlib.contextmanager
def exclusive(data: Path) -> Iterator[None]:
    """One process per data directory: a node keeps overlays of what it has not
    committed yet, so a second node, or an import under a running node, would act on a
    state it cannot see. The lock is released by the kernel when the process dies."""
    data.mkdir(parents=True, exist_ok=True)
    fd = os.open(data / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirBusy(f"{data} is in use by another node or import") from None
        yield
    finally:
        os.close(fd)


def serve_blocking(config: EdgeConfig) -> None:
    """Run a node until SIGINT/SIGTERM, on uvloop."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    _run(_serve(config))


def _run(coro_factory: object) -> None:
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - platforms without uvloop
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(coro_factory)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the node's HTTP/WebSocket API")
    serve.add_argument("--data", type=Path, required=True, help="LMDB data directory")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8800)
    serve.add_argument("--admin-token", help="technician token (or EDGE_ADMIN_TOKEN)")
    serve.add_argument("--node-id", help="stable node id (default: generated once, stored)")
    serve.add_argument("--no-sync-writes", action="store_true",
                       help="do not fsync commits (benchmarks of the CPU path only)")
    serve.add_argument("--commit-interval-ms",
                       type=_from_zero_to(MAX_COMMIT_INTERVAL_S * 1000, "ms"),
                       default=COMMIT_INTERVAL_S * 1000,
                       help="least time between two group commits' starts while scans "
                       "keep coming: more scans per commit, at the price of that much latency "
                       "(default %(default)s: back to back)")
    serve.add_argument("--pace-below", type=_from_zero_to(MAX_BATCH, "scans"),
                       default=PACE_BELOW,
                       help="with --commit-interval-ms: wait for the interval only while a "
                       "commit would carry fewer scans than this (default %(default)s: "
                       "always), so a loaded node commits at once")
    serve.add_argument("--journal-mb", type=_from_zero_to(MAX_JOURNAL_MB, "MiB"),
                       default=JOURNAL_BYTES / (1 << 20),
                       help="size of the scan journal, where a group of scans is made "
                       "durable with one flush before it is stored in the index "
                       "(default %(default)s; 0: scans are committed straight to the index)")
    serve.add_argument("--apply-interval-ms", type=_from_zero_to(MAX_APPLY_INTERVAL_MS, "ms"),
                       default=APPLY_INTERVAL_S * 1000,
                       help="longest a journaled scan, or a sync cursor, waits to be stored "
                       "in the index; each upload to the core waits for its cursor "
                       "(default %(default)s)")
    serve.add_argument("--writer-sched", choices=("batch", "normal"),
                       default="batch" if WRITER_SCHED_BATCH else "normal",
                       help="scheduling policy of the writer thread: batch (default) "
                       "lets the event loop run first on a shared core")
    serve.add_argument("--keep-days", type=_from_zero_to(MAX_KEEP_DAYS, "days"),
                       default=DEFAULT_KEEP_DAYS,
                       help="with --core: days a scan log entry and its remembered answer "
                       "are kept once the core has acknowledged it (default %(default)s; "
                       "0 keeps everything)")
    serve.add_argument("--no-warm", action="store_true",
                       help="do not read the index into the page cache at start (it is by "
                       "default, in the background: the first scans after a reboot would "
                       "otherwise wait for the disk)")
    serve.add_argument("--core", help="core base URL to follow and upload scans to")
    serve.add_argument("--core-token", default=os.environ.get("EDGE_CORE_TOKEN", ""),
                       help="venue-scoped node token for the core (or EDGE_CORE_TOKEN)")
    serve.add_argument("--venue", default="", help="venue name at the core")
    serve.add_argument("--gates", type=Path,
                       help='JSON file of gate profiles to set at start: {"main": {"mode": ...}}')
    serve.add_argument("--log-level", default="INFO")
    demo = sub.add_parser("demo", help="start the bundled core with a demo venue and a node")
    demo.add_argument("--data", type=Path, default=Path("demo-data"))
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8800)
    demo.add_argument("--core-port", type=int, default=8700)
    demo.add_argument("--admin-token", default="demo",
                      help="token for both the core and the node (demo only)")
    imp = sub.add_parser("import", help="build the index from a snapshot file, offline")
    imp.add_argument("--data", type=Path, required=True)
    imp.add_argument("snapshot", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from edge.demo import run_demo

        return run_demo(args.data, args.host, args.port, args.core_port, args.admin_token)
    if args.command == "import":
        try:
            with exclusive(args.data):
                report = import_file(args.data, args.snapshot)
        except DataDirBusy as exc:
            print(f"import refused: {exc}", file=sys.stderr)
            return 2
        except (OSError, SnapshotError) as exc:
            print(f"import failed: {exc}", file=sys.stderr)
            return 2
        print(f"imported {report.records} records for venue {report.venue!r} "
              f"(cursor {report.cursor}) in {report.seconds:.2f} s")
        return 0
    if args.core and not (args.core_token and args.venue):
        print("--core needs --core-token and --venue", file=sys.stderr)
        return 2
    gates = None
    if args.gates is not None:
        try:
            gates = msgspec.json.decode(args.gates.read_bytes(), type=dict[str, GateProfile])
        except (OSError, msgspec.DecodeError) as exc:
            print(f"cannot read gate profiles {args.gates}: {exc}", file=sys.stderr)
            return 2
    config = EdgeConfig(
        data=args.data, admin_token=_admin_token(args.data, args.admin_token),
        host=args.host, port=args.port, node_id=args.node_id,
        sync_writes=not args.no_sync_writes, commit_interval_s=args.commit_interval_ms / 1000,
        writer_sched_batch=args.writer_sched == "batch", keep_days=args.keep_days,
        pace_below=int(args.pace_below), journal_bytes=int(args.journal_mb * (1 << 20)),
        apply_interval_s=args.apply_interval_ms / 1000,
        warm=not args.no_warm, gates=gates,
        core=args.core, core_token=args.core_token, venue=args.venue,
    )
    try:
        with exclusive(args.data):
            serve_blocking(config)
    except DataDirBusy as exc:
        print(f"serve refused: {exc}", file=sys.stderr)
        return 2
    except (OSError, lmdb.Error) as exc:
        # The data directory or its disk (full, read-only, not ours): say so, not a
        # traceback. Bugs raise other exceptions, and keep their traceback.
        log.debug("serve failed", exc_info=True)
        print(f"serve failed: cannot use the data in {args.data}: {exc}", file=sys.stderr)
        return 2
    return 0
