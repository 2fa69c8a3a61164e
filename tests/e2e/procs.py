"""Real core and edge processes on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import free_port

ADMIN = "e2e-admin"
VENUE = "Arena"
READY_S = 30.0


@dataclass
class Proc:
    name: str
    argv: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(self.argv, stdout=fh, stderr=fh)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, (
                f"{self.name} exited: {self.log.read_text()[-2000:]}"
            )
            try:
                async with session.get(self.url + "/api/v1/status",
                                       headers={"Authorization": f"Bearer {ADMIN}"}) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} not ready: {self.log.read_text()[-2000:]}")


def core_proc(tmp: Path, port: int | None = None) -> Proc:
    port = port or free_port()
    return Proc("core", [sys.executable, "-m", "core", "serve", "--data", str(tmp / "core"),
                         "--port", str(port), "--admin-token", ADMIN, "--jobs-interval", "0"],
                port, tmp / "core.log")


def edge_proc(tmp: Path, name: str, core_url: str, node_token: str, *extra: str) -> Proc:
    port = free_port()
    data = tmp / name
    data.mkdir(parents=True, exist_ok=True)
    return Proc(name, [sys.executable, "-m", "edge", "serve", "--data", str(data),
                       "--port", str(port), "--admin-token", ADMIN, "--node-id", name,
                       "--core", core_url, "--core-token", node_token, "--venue", VENUE,
                       "--log-level", "WARNING", *extra],
                port, tmp / f"{name}.log")


@dataclass
class Http:
    session: aiohttp.ClientSession
    seq: int = 0
    headers: dict[str, str] = field(default_factory=lambda: {"Authorization": f"Bearer {ADMIN}"})

    async def call(self, method: str, url: str, json: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, url, json=json, headers=self.headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, url: str, json: Any = None) -> Any:
        status, body = await self.call(method, url, json)
        assert status in (200, 201), (status, body)
        return body

    async def scan(self, edge: Proc, code: str, gate: str = "main",
                   scan_id: str | None = None) -> dict[str, Any]:
        self.seq += 1
        body = {"scan_id": scan_id or f"{edge.name}-{self.seq}", "code": code, "gate": gate}
        return await self.ok("POST", edge.url + "/api/v1/scans", body)  # type: ignore[no-any-return]


def iso(t: datetime) -> str:
    return t.isoformat()


def event_now_body() -> dict[str, Any]:
    """One event whose doors are open now, in the venue every node follows."""
    now = datetime.now(UTC)
    return {
        "name": "Tonight", "venue": VENUE, "timezone": "UTC",
        "dates": [{"start": iso(now + timedelta(hours=1)), "end": iso(now + timedelta(hours=4)),
                   "doors_open": iso(now - timedelta(hours=1))}],
        "zones": [{"name": "Floor", "capacity": 500}],
        "rates": [{"name": "Full", "price": "30.00"}],
    }


async def sell(http: Http, core: Proc, event: dict[str, Any], quantity: int = 1,
               payment: str = "card") -> dict[str, Any]:
    body = {"customer": {"name": "Ada Guest"}, "payment": payment, "channel": "online",
            "items": [{"date": event["dates"][0]["id"], "zone": event["zones"][0]["id"],
                       "rate": event["rates"][0]["id"], "quantity": quantity}]}
    return await http.ok("POST", core.url + "/api/v1/orders", body)  # type: ignore[no-any-return]


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], within_s: float = 10.0
) -> float:
    """Poll *check* (a plain or an async predicate) until true (bounded); return the
    seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {within_s} s")


def env_ok() -> bool:
    return os.name == "posix"
