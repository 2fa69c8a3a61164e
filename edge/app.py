"""Application factory: the index, the writer thread and the scan service, started and
stopped with the aiohttp app (``cleanup_ctx``), so nothing outlives the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from edge.api import (
    FOLLOWER,
    MAX_BODY_BYTES,
    NODE_ID,
    PRUNER,
    SERVICE,
    STARTED,
    TOKEN,
    WARMER,
    add_routes,
)
from edge.follower import Follower
from edge.index import Index, Warmer
from edge.model import GateProfile
from edge.retention import DAY_S, DEFAULT_KEEP_DAYS, Pruner
from edge.scan import InvalidGate, ScanService
from edge.scanlog import (
    APPLY_INTERVAL_S,
    COMMIT_INTERVAL_S,
    JOURNAL_BYTES,
    PACE_BELOW,
    WRITER_SCHED_BATCH,
    GroupCommitter,
)
from sync.client import CoreClient, SyncError

log = logging.getLogger(__name__)

IDLE_CLOSE_S = 60.0
"""A connection with no request in progress (idle after an answer, or a request head
that never completes) is closed after this long. aiohttp's default is an hour: a device
on the venue network holding a few thousand sockets open would exhaust the node's file
descriptors, and the gates could not connect. A scanner idle this long reconnects."""


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    data: Path
    admin_token: str
    host: str = "127.0.0.1"
    port: int = 8800
    node_id: str | None = None
    sync_writes: bool = True
    """fsync every commit. Off only for throwaway benchmarks of the CPU path."""
    commit_interval_s: float = COMMIT_INTERVAL_S
    """Least time between two commits' starts (see ``edge.scanlog.COMMIT_INTERVAL_S``)."""
    writer_sched_batch: bool = WRITER_SCHED_BATCH
    """The writer thread under ``SCHED_BATCH`` (see ``edge.scanlog.GroupCommitter``)."""
    pace_below: int = PACE_BELOW
    """Pace only commits of fewer scans than this (``GroupCommitter.pace_below``)."""
    journal_bytes: int = JOURNAL_BYTES
    """Size of the scan journal (``edge.journal``); 0 commits scans straight to LMDB."""
    apply_interval_s: float = APPLY_INTERVAL_S
    keep_days: float = DEFAULT_KEEP_DAYS
    """Days an entry of the scan log (and its remembered answer) is kept once the core has
    acknowledged it (``edge.retention``); 0 keeps everything."""
    warm: bool = True
    """Read the index into the page cache at start (``edge.index.Warmer``)."""
    gates: dict[str, GateProfile] | None = None
    """Gate profiles to set at start (``--gates FILE``), as if PUT one by one."""
    core: str | None = None
    """Core base URL to follow and upload to; None serves what the index has."""
    core_token: str = ""
    venue: str = ""


def node_id_for(index: Index, wanted: str | None) -> str:
    stored = index.get_meta("node_id")
    if stored and (not wanted or wanted == stored.decode()):
        return stored.decode()
    node_id = wanted or "node-" + secrets.token_hex(4)
    with index.env.begin(write=True, db=index.meta) as txn:
        txn.put(b"node_id", node_id.encode())
    return node_id


def runner_for(app: web.Application, **options: object) -> web.AppRunner:
    """The node's runner for *app*: no access log, idle connections closed."""
    return web.AppRunner(app, access_log=None, keepalive_timeout=IDLE_CLOSE_S,
                         **options)  # type: ignore[arg-type]


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (each device
    connection is one); returns the limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # RLIM_INFINITY may be refused for files
            return soft
        return hard
    return soft


def build_app(config: EdgeConfig) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[TOKEN] = f"Bearer {config.admin_token}".encode()
    app[STARTED] = time.time()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        # Everything started is stopped in reverse order, also when a later step of the
        # start fails (a bootstrap that cannot be stored, say).
        async with contextlib.AsyncExitStack() as stack:
            # No writemap while serving: LMDB then msyncs the whole map at every commit;
            # without it a commit writes and fdatasyncs only the pages it dirtied.
            index = Index(config.data, sync=config.sync_writes)
            stack.callback(index.close)
            warmer = Warmer(index, budget_bytes=None if config.warm else 0)
            warmer.start()
            stack.callback(warmer.stop)
            app[WARMER] = warmer
            app[NODE_ID] = node_id_for(index, config.node_id)
            committer = GroupCommitter(
                index, asyncio.get_running_loop(), interval_s=config.commit_interval_s,
                sched_batch=config.writer_sched_batch, pace_below=config.pace_below,
                journal_bytes=config.journal_bytes, apply_interval_s=config.apply_interval_s,
            )
            committer.start()
            stack.push_async_callback(committer.stop)
            service = ScanService(index, committer)
            app[SERVICE] = service
            follower: Follower | None = None
            if config.core:
                client = await stack.enter_async_context(
                    CoreClient(config.core, config.core_token, config.venue)
                )
                follower = Follower(service, client, app[NODE_ID])
                app[FOLLOWER] = follower
                if follower.needs_bootstrap():
                    try:
                        await follower.bootstrap(config.data)
                    except SyncError as exc:
                        log.warning("no snapshot from the core yet (%s); retrying", exc)
            for name, profile in (config.gates or {}).items():
                try:
                    await service.put_gate(name, profile, strict=False)
                except InvalidGate as exc:  # over the caps: the node still starts
                    log.warning("gate %r from the configuration not kept: %s", name, exc)
            if follower is not None:
                follower.start()
                stack.push_async_callback(follower.stop)
                if config.keep_days > 0:
                    pruner = Pruner(service, config.keep_days * DAY_S)
                    pruner.start()
                    stack.push_async_callback(pruner.stop)
                    app[PRUNER] = pruner
            log.info("edge node %s ready: %s", app[NODE_ID], config.data)
            yield

    app.cleanup_ctx.append(lifecycle)
    add_routes(app)
    return app
