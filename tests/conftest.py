"""Shared fixtures: real servers on 127.0.0.1, real LMDB files in tmp dirs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edge.app import EdgeConfig, build_app, runner_for
from edge.importer import import_file
from tests.venue import Venue, make_venue

TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EdgeNode:
    url: str
    app: web.Application
    session: aiohttp.ClientSession
    venue: Venue
    data: Path

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}", **extra}

    async def call(self, method: str, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = kw.pop("headers", None) or self.headers()
        async with self.session.request(method, self.url + path, json=json, headers=headers,
                                        **kw) as resp:
            ctype = resp.headers.get("Content-Type", "")
            body = await resp.json() if "json" in ctype else await resp.text()
            return resp.status, body

    async def scan(self, code: str, gate: str = "main", scan_id: str | None = None,
                   *, headers: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
        """POST one scan; *extra* goes into the body, *headers* replace the default ones."""
        global _SEQ
        _SEQ += 1
        body = {"scan_id": scan_id or f"s{_SEQ}", "code": code, "gate": gate, **extra}
        status, answer = await self.call("POST", "/api/v1/scans", body, headers=headers)
        assert status == 200, answer
        return answer

    async def gate(self, name: str, **profile: Any) -> None:
        status, body = await self.call("PUT", f"/api/v1/gates/{name}", profile)
        assert status == 200, body


_SEQ = 0


@contextlib.asynccontextmanager
async def run_edge(data: Path, venue: Venue) -> AsyncIterator[EdgeNode]:
    app = build_app(EdgeConfig(data=data, admin_token=TOKEN, port=0))
    runner = runner_for(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    session = aiohttp.ClientSession()
    try:
        yield EdgeNode(f"http://127.0.0.1:{port}", app, session, venue, data)
    finally:
        await session.close()
        await runner.cleanup()


@pytest.fixture
def venue() -> Venue:
    return make_venue()


@pytest.fixture
async def edge(tmp_path: Path, venue: Venue) -> AsyncIterator[EdgeNode]:
    """A node whose index holds ``venue`` as built by the test before first use."""
    data = tmp_path / "node"
    holder: dict[str, Any] = {}

    class Lazy:
        async def start(self) -> EdgeNode:
            import_file(data, venue.write(tmp_path / "venue.snap"))
            cm = run_edge(data, venue)
            holder["cm"] = cm
            node = await cm.__aenter__()
            holder["node"] = node
            return node

    yield Lazy()  # type: ignore[misc]
    if "cm" in holder:
        await holder["cm"].__aexit__(None, None, None)


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Any:
    before = set(threading.enumerate())
    yield
    for _ in range(50):
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()
                 and not t.daemon]
        if not extra:
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"threads left running: {extra}")


@pytest.fixture(autouse=True)
async def no_task_leaks() -> AsyncIterator[None]:
    yield
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not left, f"tasks left running: {left}"
