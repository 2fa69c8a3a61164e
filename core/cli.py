"""``python -m core``: serve, jobs, demo, bench-snapshot."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
from datetime import datetime
from pathlib import Path
from typing import Final

from core.config import ADMIN_TOKEN_ENV, DEFAULT_HOST, DEFAULT_PORT, CoreConfig

ADMIN_TOKEN_FILE: Final = "admin-token"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core", description="Gatekeeper core")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the ticketing core's HTTP API")
    serve.add_argument("--data", required=True, type=Path, help="data directory")
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--admin-token", default=None, help=f"or env {ADMIN_TOKEN_ENV}")
    serve.add_argument("--reminder-days", type=int, default=10)
    serve.add_argument("--reminders", type=int, default=2)
    serve.add_argument("--jobs-interval", type=float, default=60.0, help="seconds; 0 = off")

    job = sub.add_parser("jobs", help="run the invoice deadline job once")
    job.add_argument("--data", required=True, type=Path)
    job.add_argument("--now", default=None, help="ISO-8601 time with timezone (default: now)")

    demo = sub.add_parser("demo", help="create a demo event and sell tickets through the API")
    demo.add_argument("--core", default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}")
    demo.add_argument("--token", default=None, help=f"admin token (or env {ADMIN_TOKEN_ENV})")
    demo.add_argument("--venue", default="Demo Hall")
    demo.add_argument("--tonight", action="store_true",
                      help="first date tonight with doors open now (gates admit at once)")

    bench = sub.add_parser("bench-snapshot", help="time a large venue snapshot")
    bench.add_argument("--data", required=True, type=Path)
    bench.add_argument("--tickets", type=int, default=1_000_000)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "serve":
        return _serve(args)
    if args.command == "jobs":
        return _jobs(args)
    if args.command == "demo":
        from core.demo import run_demo

        token = args.token or os.environ.get(ADMIN_TOKEN_ENV, "")
        if not token:
            parser.error(f"--token or {ADMIN_TOKEN_ENV} is required")
        demo_run = run_demo(args.core, token, args.venue, tonight=args.tonight)
        print(json.dumps(asyncio.run(demo_run), indent=2))
        return 0
    from core.benchsnap import run_bench

    print(json.dumps(asyncio.run(run_bench(args.data, args.tickets))))
    return 0


def _serve(args: argparse.Namespace) -> int:
    token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or _stored_token(args.data)
    config = CoreConfig(
        data=str(args.data),
        admin_token=token,
        host=args.host,
        port=args.port,
        reminder_days=args.reminder_days,
        reminders=args.reminders,
        jobs_interval_s=args.jobs_interval,
    )
    from core.app import serve

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(serve(config))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(serve(config))
    return 0


def _stored_token(data: Path) -> str:
    """No token given: use (or create) one kept in the data directory, readable by us only."""
    data.mkdir(parents=True, exist_ok=True)
    path = data / ADMIN_TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32))
        print(f"admin token written to {path}", file=sys.stderr)
    return path.read_text().strip()


def _jobs(args: argparse.Namespace) -> int:
    from core import jobs
    from core.store import DB_FILENAME, connect, migrate, transaction

    now = datetime.now().astimezone() if args.now is None else datetime.fromisoformat(args.now)
    if now.tzinfo is None:
        print("--now needs a timezone", file=sys.stderr)
        return 2
    path = args.data / DB_FILENAME
    if not path.exists():
        print(f"no core database in {args.data}", file=sys.stderr)
        return 2
    conn = connect(path)
    try:
        migrate(conn)
        with transaction(conn) as tx:
            report = jobs.run_deadlines(tx, now.timestamp())
    finally:
        conn.close()
    print(json.dumps(report.as_dict()))
    return 0
