"""``python -m core demo``: create a demo event and sell tickets through the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp


async def run_demo(
    core_url: str, token: str, venue: str, *, tonight: bool = False
) -> dict[str, Any]:
    """Create an event with two dates, sell by card and invoice, print stock, sell a pass.

    *tonight*: the first date starts in an hour and its doors are open now.
    """
    headers = {"Authorization": f"Bearer {token}"}
    base = core_url.rstrip("/")
    if tonight:
        first_start = (datetime.now(UTC) + timedelta(hours=1)).replace(second=0, microsecond=0)
    else:
        first_start = (datetime.now(UTC) + timedelta(days=1)).replace(
            hour=18, minute=0, second=0, microsecond=0
        )
    doors_before = timedelta(hours=2 if tonight else 1)

    async with aiohttp.ClientSession(headers=headers) as session:

        async def post(path: str, body: dict[str, Any]) -> Any:
            async with session.post(base + path, json=body) as resp:
                data = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise SystemExit(f"{path}: {resp.status} {data}")
                return data

        dates = [
            {
                "start": (first_start + timedelta(days=d)).isoformat(),
                "end": (first_start + timedelta(days=d, hours=3)).isoformat(),
                "doors_open": (first_start + timedelta(days=d) - doors_before).isoformat(),
            }
            for d in (0, 1)
        ]
        event = await post(
            "/api/v1/events",
            {
                "name": "Demo Concert",
                "venue": venue,
                "dates": dates,
                "zones": [{"name": "Floor", "capacity": 500}, {"name": "Balcony", "capacity": 100}],
                "rates": [
                    {"name": "Full", "price": "49.00"},
                    {"name": "Reduced", "price": "29.00"},
                ],
            },
        )
        first, zone, rate = (
            event["dates"][0]["id"],
            event["zones"][0]["id"],
            event["rates"][0]["id"],
        )
        card = await post(
            "/api/v1/orders",
            {
                "customer": {"name": "Demo Customer", "email": "demo@example.org"},
                "payment": "card",
                "channel": "online",
                "items": [{"date": first, "zone": zone, "rate": rate, "quantity": 2}],
            },
        )
        invoice = await post(
            "/api/v1/orders",
            {
                "customer": {"name": "Demo Company", "email": "billing@example.org"},
                "payment": "invoice",
                "channel": "box_office",
                "items": [{"date": first, "zone": zone, "rate": rate, "quantity": 3}],
            },
        )
        stock = await post(
            "/api/v1/stock",
            {"date": first, "zone": zone, "rate": rate, "quantity": 5, "channel": "box_office"},
        )
        product = await post(
            "/api/v1/pass-products",
            {
                "name": "Demo Pass",
                "venue": venue,
                "events": [{"event": event["id"]}],
                "price": "80",
            },
        )
        pass_order = await post(
            "/api/v1/orders",
            {
                "customer": {"name": "Pass Holder"},
                "payment": "cash",
                "channel": "box_office",
                "items": [{"pass": product["id"], "quantity": 1}],
            },
        )
        node = await post(f"/api/v1/venues/{venue}/tokens", {"name": "demo-node"})
    return {
        "venue": venue,
        "event": event["id"],
        "dates": [d["id"] for d in event["dates"]],
        "orders": {
            "card": card["number"],
            "invoice": invoice["number"],
            "pass": pass_order["number"],
        },
        "codes": [t["code"] for t in card["tickets"] + pass_order["tickets"]],
        "printed_stock": [t["code"] for t in stock["tickets"]],
        "node_token": node["token"],
    }
