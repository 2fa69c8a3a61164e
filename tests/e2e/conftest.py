"""Fixtures of the end-to-end tests: a real core process on 127.0.0.1 with an event whose
doors are open now, and edge node processes following it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.procs import VENUE, Http, Proc, core_proc, edge_proc, event_now_body


@dataclass
class Site:
    tmp: Path
    http: Http
    core: Proc
    event: dict[str, Any]
    node_token: str
    edges: list[Proc]

    async def add_edge(self, name: str, *extra: str) -> Proc:
        edge = edge_proc(self.tmp, name, self.core.url, self.node_token, *extra)
        self.edges.append(edge)
        edge.start()
        await edge.wait_ready(self.http.session)
        await self.http.ok("PUT", edge.url + "/api/v1/gates/main", {"mode": "single"})
        return edge

    async def status(self, edge: Proc) -> dict[str, Any]:
        return await self.http.ok("GET", edge.url + "/api/v1/status")  # type: ignore[no-any-return]

    async def synced(self, edge: Proc) -> bool:
        sync = (await self.status(edge))["sync"]
        return bool(sync["outbox"] == 0 and sync["lag_changes"] == 0 and sync["connected"])

    async def ticket(self, ident: int) -> dict[str, Any]:
        return await self.http.ok(  # type: ignore[no-any-return]
            "GET", f"{self.core.url}/api/v1/tickets/{ident}"
        )


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    core = core_proc(tmp_path)
    edges: list[Proc] = []
    core.start()
    try:
        async with aiohttp.ClientSession() as session:
            http = Http(session)
            await core.wait_ready(session)
            event = await http.ok("POST", core.url + "/api/v1/events", event_now_body())
            token = await http.ok("POST", f"{core.url}/api/v1/venues/{VENUE}/tokens",
                                  {"name": "e2e"})
            yield Site(tmp_path, http, core, event, token["token"], edges)
    finally:
        for edge in edges:
            edge.stop()
        core.stop()
