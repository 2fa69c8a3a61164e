"""The core's aiohttp application: storage, routes, the deadline job, clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from aiohttp import web

from core import jobs, keys
from core.api import ROUTES
from core.api._http import (
    CONFIG,
    MAX_CONCURRENT_SNAPSHOTS,
    NOTIFIER,
    SNAPSHOT_DIGESTS,
    SNAPSHOT_SLOTS,
    STORE,
    error_middleware,
)
from core.config import MAX_BODY_BYTES, CoreConfig
from core.errors import CoreError
from core.feed import Notifier
from core.snapshot import SnapshotDigests
from core.store import Store

_LOGGER = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S: Final = 5.0


def make_app(config: CoreConfig) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[error_middleware])
    notifier = Notifier()
    app[CONFIG] = config
    app[NOTIFIER] = notifier
    app[STORE] = Store(Path(config.data), on_write=notifier.notify)
    app[SNAPSHOT_SLOTS] = asyncio.Semaphore(MAX_CONCURRENT_SNAPSHOTS)
    app[SNAPSHOT_DIGESTS] = SnapshotDigests()
    app.router.add_routes(ROUTES)
    app.cleanup_ctx.append(_storage)
    app.cleanup_ctx.append(_deadline_job)
    return app


async def _storage(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.open()
    key_id = await store.write(keys.ensure_key)
    _LOGGER.info("storage open at %s, signing with key %d", store.path, key_id)
    yield
    await store.close()


async def _deadline_job(app: web.Application) -> AsyncIterator[None]:
    interval = app[CONFIG].jobs_interval_s
    task = None
    if interval > 0:
        task = asyncio.create_task(_run_jobs(app, interval), name="core-deadline-job")
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _run_jobs(app: web.Application, interval: float) -> None:
    while True:
        try:
            report = await app[STORE].write(jobs.run_deadlines, time.time())
        except CoreError as exc:
            _LOGGER.warning("deadline job failed: %s", exc.message)
        else:
            if report.reminders or report.cancelled or report.cards_moved:
                _LOGGER.info("deadline job: %s", report.as_dict())
        await asyncio.sleep(interval)


async def serve(config: CoreConfig) -> None:
    """Serve until SIGINT or SIGTERM."""
    runner = web.AppRunner(make_app(config), shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        _LOGGER.info("core listening on http://%s:%d", config.host, config.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
