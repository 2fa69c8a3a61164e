"""Fixtures: a real core server on 127.0.0.1 (port 0) with a real SQLite file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from core.api._http import STORE
from core.app import make_app
from core.config import CoreConfig
from core.store import Store

TOKEN = "test-admin-token"
VENUE = "Arena"


@dataclass
class Core:
    url: str
    session: aiohttp.ClientSession
    app: web.Application

    @property
    def store(self) -> Store:
        return self.app[STORE]

    async def call(self, method: str, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        kw.setdefault("headers", {"Authorization": f"Bearer {TOKEN}"})
        async with self.session.request(method, self.url + path, json=json, **kw) as resp:
            data = await resp.json(content_type=None) if resp.content_length != 0 else None
            return resp.status, data

    async def ok(self, method: str, path: str, json: Any = None, **kw: Any) -> Any:
        status, data = await self.call(method, path, json, **kw)
        assert status in (200, 201), (status, data)
        return data


@pytest.fixture
async def core(tmp_path):
    config = CoreConfig(data=str(tmp_path / "core"), admin_token=TOKEN, port=0, jobs_interval_s=0)
    app = make_app(config)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            yield Core(f"http://{host}:{port}", session, app)
    finally:
        await runner.cleanup()


def event_body(capacity: int = 100, ndates: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "name": "Concert",
        "venue": VENUE,
        "dates": [
            {
                "start": f"2030-06-{10 + i:02d}T20:00:00+02:00",
                "end": f"2030-06-{10 + i:02d}T23:00:00+02:00",
                "doors_open": f"2030-06-{10 + i:02d}T19:00:00+02:00",
            }
            for i in range(ndates)
        ],
        "zones": [{"name": "Floor", "capacity": capacity}, {"name": "Balcony", "capacity": 10}],
        "rates": [{"name": "Full", "price": "45.50"}, {"name": "Child", "price": "20"}],
        **extra,
    }


@pytest.fixture
async def event(core):
    return await core.ok("POST", "/api/v1/events", event_body())


def line(event: dict[str, Any], quantity: int = 1, *, date: int = 0, zone: int = 0, rate: int = 0):
    return {
        "date": event["dates"][date]["id"],
        "zone": event["zones"][zone]["id"],
        "rate": event["rates"][rate]["id"],
        "quantity": quantity,
    }


def order_body(items, payment: str = "card", channel: str = "online", name: str = "Ada Lovelace"):
    return {
        "customer": {"name": name, "email": "ada@example.org"},
        "payment": payment,
        "channel": channel,
        "items": items,
    }
