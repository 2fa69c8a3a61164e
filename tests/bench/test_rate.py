"""The fixed-rate generator of ``bench scan``'s half-rate phase and ``bench ab``, against
the real baseline server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bench.baseline import make_app
from bench.rate import run_fixed_rate

BODY = b'"code":"GK1ABCDEFGHIJKLMNOPQRSTUVWXYZ","gate":"main","direction":"auto"}'


@pytest.fixture
async def baseline_port() -> AsyncIterator[int]:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port
    finally:
        await runner.cleanup()


def tickers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rate-ticker" and t.is_alive()]


async def test_a_phase_sends_its_schedule_and_reports_its_own_lateness(baseline_port: int) -> None:
    result = await run_fixed_rate("127.0.0.1", baseline_port, "t", [BODY], 200.0, 1.0, 8)
    assert result["requests"] == 200 and result["errors"] == 0 and result["not_sent"] == 0
    assert result["reasons"] == {"ok": 200}
    # Send lag is the generator's own lateness: never negative, and reported.
    assert 0.0 <= result["sendlag_p50_ms"] <= result["sendlag_p99_ms"]
    assert not tickers()


async def test_a_cancelled_phase_stops_its_ticker_and_restores_the_interpreter(
    baseline_port: int,
) -> None:
    """Ctrl-C or SIGTERM during a phase: the generator stops now, not when its schedule
    would have ended, and leaves the GC and the switch interval as it found them."""
    switch, gc_on = sys.getswitchinterval(), gc.isenabled()
    schedule_s = 60.0
    task = asyncio.ensure_future(
        run_fixed_rate("127.0.0.1", baseline_port, "t", [BODY], 100.0, schedule_s, 4)
    )
    await asyncio.sleep(0.5)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Far inside the schedule (the old generator joined its ticker for all of it).
    assert time.monotonic() - cancelled_at < schedule_s / 2
    assert not tickers()
    assert sys.getswitchinterval() == switch and gc.isenabled() == gc_on
    assert not gc.get_freeze_count()
