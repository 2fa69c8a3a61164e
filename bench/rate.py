"""An open-loop HTTP/1.1 load generator at a fixed rate (what wrk2 does; Debian has no wrk2).

Requests are scheduled at ``t0 + k / rate`` whatever the server does; each one is
sent on the first free keep-alive connection of a bounded pool. Latency is measured
from the *scheduled* time, so a stalled server shows up in the percentiles instead of
silently lowering the offered load (no coordinated omission). The service time (from
the actual send) is reported too.

Raw asyncio protocol on uvloop rather than an HTTP client library: at several thousand
requests a second a library client would measure itself.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from bench.report import percentile

_REASON = re.compile(rb'"reason":"([a-z_]+)"')


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    service: list[float] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    status_errors: int = 0
    socket_errors: int = 0


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._try_complete()

    def _try_complete(self) -> None:
        if self.waiter is None or self.waiter.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        total = end + 4 + length
        if len(self.buf) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buf[end + 4 : total])
        del self.buf[:total]
        self.waiter.set_result((status, body))

    async def roundtrip(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


def _request(host: str, port: int, token: str, body: bytes) -> bytes:
    return (
        b"POST /api/v1/scans HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (host.encode(), port, token.encode(), len(body), body)
    )


async def run_fixed_rate(
    host: str,
    port: int,
    token: str,
    bodies: Sequence[bytes],
    rate: float,
    seconds: float,
    connections: int = 32,
    nonce: str = "r",
) -> dict[str, Any]:
    """Offer *rate* requests/s for *seconds*; bodies lack ``scan_id`` (added here)."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    queue: asyncio.Queue[tuple[float, int]] = asyncio.Queue()
    total = max(1, int(rate * seconds))
    prefix = b'{"scan_id":"' + nonce.encode() + b"-"

    async def worker() -> None:
        conn: _Conn | None = None
        while True:
            item = await queue.get()
            if item[1] < 0:
                return
            scheduled, k = item
            body = prefix + str(k).encode() + b'",' + bodies[k % len(bodies)]
            try:
                if conn is None or conn.lost:
                    _, conn = await loop.create_connection(_Conn, host, port)
                sent = time.perf_counter()
                status, answer = await asyncio.wait_for(
                    conn.roundtrip(_request(host, port, token, body)), 10.0
                )
            except (TimeoutError, OSError):
                tally.socket_errors += 1
                if conn is not None and conn.transport is not None:
                    conn.transport.close()
                conn = None
                continue
            done = time.perf_counter()
            tally.latencies.append(done - scheduled)
            tally.service.append(done - sent)
            if not 200 <= status < 300:
                tally.status_errors += 1
            m = _REASON.search(answer)
            tally.reasons[m.group(1).decode() if m else f"http_{status}"] += 1

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    t0 = time.perf_counter() + 0.05
    issued = 0
    deadline = t0 + seconds
    while issued < total and time.perf_counter() < deadline + 1.0:
        now = time.perf_counter()
        due = min(total, int((now - t0) * rate) + 1) if now >= t0 else 0
        while issued < due:
            queue.put_nowait((t0 + issued / rate, issued))
            issued += 1
        await asyncio.sleep(0.0005)
    for _ in workers:
        queue.put_nowait((0.0, -1))
    _, pending = await asyncio.wait(workers, timeout=15.0)
    for task in pending:
        task.cancel()
    elapsed = time.perf_counter() - t0
    lat = sorted(tally.latencies)
    svc = sorted(tally.service)
    return {
        "offered_per_s": round(rate, 1),
        "achieved_per_s": round(len(lat) / elapsed, 1) if elapsed > 0 else 0.0,
        "requests": len(lat),
        "p50_ms": round(percentile(lat, 50) * 1000, 3),
        "p90_ms": round(percentile(lat, 90) * 1000, 3),
        "p99_ms": round(percentile(lat, 99) * 1000, 3),
        "p999_ms": round(percentile(lat, 99.9) * 1000, 3),
        "max_ms": round((lat[-1] if lat else 0.0) * 1000, 3),
        "service_p99_ms": round(percentile(svc, 99) * 1000, 3),
        "errors": tally.status_errors + tally.socket_errors,
        "socket_errors": tally.socket_errors,
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
) -> dict[str, Any]:
    """Blocking wrapper: run ``run_fixed_rate`` on a fresh uvloop loop."""
    try:
        import uvloop

        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(
            run_fixed_rate(host, port, token, bodies, rate, seconds, connections, nonce)
        )
