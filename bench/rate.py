"""An open-loop HTTP/1.1 load generator at a fixed rate (what wrk2 does; Debian has no wrk2).

Requests are scheduled at ``t0 + k / rate`` whatever the server does; each one is
sent on the first free keep-alive connection of a bounded pool. Latency is measured
from the *scheduled* time, so a stalled server shows up in the percentiles instead of
silently lowering the offered load (no coordinated omission). The service time (from
the actual send) is reported too, and so is the generator's own lateness
(``sendlag_*``: actual send minus scheduled time): a phase whose send lag p99 is more
than a millisecond or two measured the load machine, not the server. The schedule is
kept by a thread sleeping on the kernel's high-resolution timer (not the event loop's
whole-millisecond timers, which sent requests in 1 ms bursts, up to ~2 ms late, and
let a server answer a burst per wake-up); arrivals are evenly spaced, or Poisson with
``poisson=True`` (independent devices). The cyclic GC is frozen and off during a phase.

Raw asyncio protocol on uvloop rather than an HTTP client library: at several thousand
requests a second a library client would measure itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import re
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from bench.report import percentile

_REASON = re.compile(rb'"reason":"([a-z_]+)"')


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    service: list[float] = field(default_factory=list)
    sendlag: list[float] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    status_errors: int = 0
    socket_errors: int = 0


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time.

    Callback-driven (no task or future per request): when an answer completes, the
    connection records it and takes the next waiting request itself, or goes idle.
    """

    def __init__(self, gen: _Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.scheduled = 0.0
        self.sent = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.gen.tally.socket_errors += 1
        self.gen.lost(self)

    def send(self, scheduled: float, request: bytes) -> None:
        assert self.transport is not None
        self.scheduled = scheduled
        self.busy = True
        self.sent = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            at = head.lower().find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            total = end + 4 + length
            if len(self.buf) < total:
                return
            status = int(head[9:12])
            body = bytes(self.buf[end + 4 : total])
            del self.buf[:total]
            self.busy = False
            self.gen.answered(self, status, body)


class _Generator:
    def __init__(self, host: str, port: int, token: str, bodies: Sequence[bytes], nonce: str):
        self.head = (
            b"POST /api/v1/scans HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            % (host.encode(), port, token.encode())
        )
        self.prefix = b'{"scan_id":"' + nonce.encode() + b"-"
        self.bodies = bodies
        self.tally = Tally()
        self.idle: list[_Conn] = []
        self.backlog: deque[tuple[float, int]] = deque()
        self.conns: list[_Conn] = []

    def request(self, k: int) -> bytes:
        body = self.prefix + str(k).encode() + b'",' + self.bodies[k % len(self.bodies)]
        return self.head + str(len(body)).encode() + b"\r\n\r\n" + body

    def submit(self, scheduled: float, k: int) -> None:
        if self.idle:
            self.idle.pop().send(scheduled, self.request(k))
        else:
            self.backlog.append((scheduled, k))

    def answered(self, conn: _Conn, status: int, body: bytes) -> None:
        done = time.perf_counter()
        tally = self.tally
        tally.latencies.append(done - conn.scheduled)
        tally.service.append(done - conn.sent)
        if not 200 <= status < 300:
            tally.status_errors += 1
        m = _REASON.search(body)
        tally.reasons[m.group(1).decode() if m else f"http_{status}"] += 1
        if self.backlog:
            scheduled, k = self.backlog.popleft()
            conn.send(scheduled, self.request(k))
        else:
            self.idle.append(conn)

    def lost(self, conn: _Conn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def in_flight(self) -> int:
        return sum(1 for c in self.conns if c.busy)


async def run_fixed_rate(
    host: str,
    port: int,
    token: str,
    bodies: Sequence[bytes],
    rate: float,
    seconds: float,
    connections: int = 32,
    nonce: str = "r",
    poisson: bool = False,
    seed: int = 1,
) -> dict[str, Any]:
    """Offer *rate* requests/s for *seconds*; bodies lack ``scan_id`` (added here)."""
    loop = asyncio.get_running_loop()
    gen = _Generator(host, port, token, bodies, nonce)
    for _ in range(connections):
        _, conn = await loop.create_connection(lambda: _Conn(gen), host, port)
        gen.conns.append(conn)
        gen.idle.append(conn)
    total = max(1, int(rate * seconds))
    if poisson:
        rng = random.Random(seed)
        at, offsets = 0.0, []
        for _ in range(total):
            offsets.append(at)
            at += rng.expovariate(rate)
    else:
        offsets = [k / rate for k in range(total)]
    finished = asyncio.Event()
    stop = threading.Event()
    issued_total = [0]
    # Before the schedule's start: a full collection walks the caller's pools (a
    # million codes: ~0.1 s), and every send due meanwhile would leave that late.
    switch = sys.getswitchinterval()
    gc_was_on = gc.isenabled()
    thread: threading.Thread | None = None
    try:
        sys.setswitchinterval(0.0002)  # the ticker must not wait 5 ms for the loop's GIL
        gc.collect()
        gc.freeze()  # the caller's big pools are never walked during the phase
        gc.disable()
        t0 = time.perf_counter() + 0.01

        def submit_range(first: int, stop_at: int) -> None:
            # Lateness of the generator itself (ticker + loop wake-up), apart from any
            # wait for a free connection (that one is the server's doing).
            now = time.perf_counter()
            for k in range(first, stop_at):
                scheduled = t0 + offsets[k]
                gen.tally.sendlag.append(now - scheduled)
                gen.submit(scheduled, k)

        def ticker() -> None:
            issued = 0
            try:
                while issued < total and not stop.is_set():
                    now = time.perf_counter()
                    if now > t0 + offsets[-1] + 5.0:
                        break
                    due = issued
                    while due < total and t0 + offsets[due] <= now:
                        due += 1
                    if due > issued:
                        loop.call_soon_threadsafe(submit_range, issued, due)
                        issued = due
                    if issued < total:
                        delay = t0 + offsets[issued] - time.perf_counter()
                        if delay > 0:
                            time.sleep(min(delay, 0.05))  # stop is looked at every 50 ms
            finally:
                issued_total[0] = issued
                with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                    loop.call_soon_threadsafe(finished.set)

        thread = threading.Thread(target=ticker, name="rate-ticker", daemon=True)
        thread.start()
        await asyncio.wait_for(finished.wait(), offsets[-1] + 15.0)
    finally:
        stop.set()
        if thread is not None:
            thread.join(5.0)
        sys.setswitchinterval(switch)
        if gc_was_on:
            gc.enable()
        gc.unfreeze()
    drain = time.perf_counter() + 10.0
    while (gen.backlog or gen.in_flight()) and time.perf_counter() < drain:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - t0
    unanswered = len(gen.backlog) + gen.in_flight() + (total - issued_total[0])
    for conn in gen.conns:
        if conn.transport is not None:
            conn.transport.close()
    await asyncio.sleep(0)
    tally = gen.tally
    lag = sorted(tally.sendlag)
    # Time a due request waited for a free connection (all busy: the server's stall).
    pool_wait = sorted(a - b for a, b in zip(tally.latencies, tally.service))
    lat = sorted(tally.latencies)
    svc = sorted(tally.service)
    return {
        "offered_per_s": round(rate, 1),
        "achieved_per_s": round(len(lat) / elapsed, 1) if elapsed > 0 else 0.0,
        "requests": len(lat),
        "elapsed_s": round(elapsed, 3),
        "p50_ms": round(percentile(lat, 50) * 1000, 3),
        "p90_ms": round(percentile(lat, 90) * 1000, 3),
        "p99_ms": round(percentile(lat, 99) * 1000, 3),
        "p999_ms": round(percentile(lat, 99.9) * 1000, 3),
        "max_ms": round((lat[-1] if lat else 0.0) * 1000, 3),
        "service_p50_ms": round(percentile(svc, 50) * 1000, 3),
        "service_p99_ms": round(percentile(svc, 99) * 1000, 3),
        "sendlag_p50_ms": round(percentile(lag, 50) * 1000, 3),
        "sendlag_p99_ms": round(percentile(lag, 99) * 1000, 3),
        "sendlag_max_ms": round((lag[-1] if lag else 0.0) * 1000, 3),
        "queued_p99_ms": round(percentile(pool_wait, 99) * 1000, 3),
        "not_sent": total - issued_total[0],
        "errors": tally.status_errors + tally.socket_errors + unanswered,
        "socket_errors": tally.socket_errors,
        "unanswered": unanswered,
        "reasons": dict(tally.reasons.most_common()),
    }


def fixed_rate(
    host: str,
    port: int,
    token: str,
    bodies: Sequence[bytes],
    rate: float,
    seconds: float,
    connections: int = 32,
    nonce: str = "r",
    poisson: bool = False,
) -> dict[str, Any]:
    """Blocking wrapper: run ``run_fixed_rate`` on a fresh uvloop loop."""
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(
            run_fixed_rate(
                host, port, token, bodies, rate, seconds, connections, nonce, poisson
            )
        )
