"""Back-office routes (admin token): catalogue, orders, tickets, passes, stock, keys."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Final

from aiohttp import web

from core import catalog, feed, jobs, keys, orders, passes, renewals, scans, stock, tokens
from core.api._http import CONFIG, STORE, body, error, path_id, reply, require_admin
from core.errors import BadRequest, NotFound
from core.models import (
    CancelIn,
    DateIn,
    DatePatch,
    EventIn,
    MediaIn,
    OrderIn,
    PassProductIn,
    PassUpdateIn,
    PayIn,
    QuickCancelIn,
    RenewIn,
    ResellerImportIn,
    RevokeIn,
    StockIn,
    StockSellIn,
    TokenIn,
)
from core.orders import InvoicePolicy

_ORDER_NUMBER: Final = re.compile(r"[A-Za-z0-9]{1,32}")
VERSION: Final = "0.1.0"
MAX_VENUE_CHARS: Final = 200

routes = web.RouteTableDef()


def _policy(request: web.Request) -> InvoicePolicy:
    config = request.app[CONFIG]
    return InvoicePolicy(config.reminder_days, config.reminders)


def _number(request: web.Request) -> str:
    number = request.match_info["number"]
    if not _ORDER_NUMBER.fullmatch(number):
        raise NotFound("order_not_found", "no such order")
    return number


@routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    store = request.app[STORE]
    counts = await store.read(
        lambda tx: {
            "venues": tx.scalar("SELECT COUNT(*) FROM venues"),
            "events": tx.scalar("SELECT COUNT(*) FROM events"),
            "tickets": tx.scalar("SELECT COUNT(*) FROM tickets"),
            "orders": tx.scalar("SELECT COUNT(*) FROM orders"),
            "active_key": tx.scalar("SELECT id FROM keys WHERE active = 1"),
        }
    )
    return reply({"service": "core", "version": VERSION, "status": "ok", **counts})


@routes.post("/api/v1/events")
async def create_event(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, EventIn)
    return reply(await request.app[STORE].write(catalog.create_event, data), 201)


@routes.get("/api/v1/events")
async def list_events(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(await request.app[STORE].read(catalog.list_events))


@routes.get(r"/api/v1/events/{id}")
async def get_event(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(await request.app[STORE].read(catalog.get_event, path_id(request)))


@routes.post(r"/api/v1/events/{id}/dates")
async def add_date(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, DateIn)
    return reply(await request.app[STORE].write(catalog.add_date, path_id(request), data), 201)


@routes.patch(r"/api/v1/dates/{id}")
async def patch_date(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, DatePatch)
    return reply(await request.app[STORE].write(catalog.patch_date, path_id(request), data))


@routes.get(r"/api/v1/dates/{id}/availability")
async def availability(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(await request.app[STORE].read(catalog.availability, path_id(request)))


@routes.post("/api/v1/orders")
async def place_order(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, OrderIn)
    order = await request.app[STORE].write(orders.place_order, data, _policy(request))
    return reply(order, 201)


@routes.get("/api/v1/orders/{number}")
async def get_order(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(await request.app[STORE].read(orders.get_order, _number(request)))


@routes.post("/api/v1/orders/{number}/pay")
async def pay(request: web.Request) -> web.Response:
    require_admin(request)
    await body(request, PayIn, empty_ok=True)
    return reply(await request.app[STORE].write(orders.pay, _number(request)))


@routes.post("/api/v1/orders/{number}/cancel")
async def cancel(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, CancelIn, empty_ok=True)
    return reply(await request.app[STORE].write(orders.cancel, _number(request), data))


@routes.get(r"/api/v1/tickets/{id}")
async def get_ticket(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(await request.app[STORE].read(scans.ticket_detail, path_id(request)))


@routes.post(r"/api/v1/tickets/{id}/media")
async def attach_media(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, MediaIn)
    ticket = await request.app[STORE].write(passes.attach_media, path_id(request), data.uid)
    return reply(ticket)


@routes.delete(r"/api/v1/tickets/{id}/media/{uid}")
async def detach_media(request: web.Request) -> web.Response:
    require_admin(request)
    uid = request.match_info["uid"][:64]
    return reply(await request.app[STORE].write(passes.detach_media, path_id(request), uid))


@routes.post("/api/v1/pass-products")
async def create_product(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, PassProductIn)
    return reply(await request.app[STORE].write(passes.create_product, data), 201)


@routes.get("/api/v1/pass-products")
async def list_products(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(await request.app[STORE].read(passes.list_products))


@routes.get(r"/api/v1/pass-products/{id}")
async def get_product(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(await request.app[STORE].read(passes.get_product, path_id(request)))


@routes.post(r"/api/v1/pass-products/{id}/events")
async def pass_update(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, PassUpdateIn)
    return reply(await request.app[STORE].write(passes.add_event, path_id(request), data))


@routes.post(r"/api/v1/passes/{id}/renew")
async def renew_pass(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, RenewIn)
    order = await request.app[STORE].write(renewals.renew, path_id(request), data, _policy(request))
    return reply(order, 201)


@routes.post("/api/v1/stock")
async def print_stock(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, StockIn)
    return reply({"tickets": await request.app[STORE].write(stock.print_stock, data)}, 201)


@routes.post("/api/v1/stock/sell")
async def sell_stock(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, StockSellIn)
    return reply(await request.app[STORE].write(stock.sell_stock, data, _policy(request)), 201)


@routes.post("/api/v1/stock/quick-cancel")
async def quick_cancel(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, QuickCancelIn)
    return reply(await request.app[STORE].write(stock.quick_cancel, data.code))


@routes.post("/api/v1/imports/reseller")
async def reseller_import(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, ResellerImportIn)
    return reply(await request.app[STORE].write(stock.import_reseller, data), 201)


@routes.get("/api/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    require_admin(request)
    return reply(await request.app[STORE].read(keys.list_keys))


@routes.post("/api/v1/keys/rotate")
async def rotate_key(request: web.Request) -> web.Response:
    require_admin(request)
    key_id = await request.app[STORE].write(keys.rotate)
    return reply({"active": key_id, "keys": await request.app[STORE].read(keys.list_keys)}, 201)


@routes.post(r"/api/v1/keys/{id}/revoke")
async def revoke_key(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, RevokeIn, empty_ok=True)
    reissued = await request.app[STORE].write(keys.revoke, path_id(request), data.reissue)
    return reply({"revoked": path_id(request), "reissued": reissued})


@routes.post("/api/v1/venues/{venue}/tokens")
async def create_token(request: web.Request) -> web.Response:
    require_admin(request)
    data = await body(request, TokenIn, empty_ok=True)
    venue = request.match_info["venue"]
    if not 1 <= len(venue) <= MAX_VENUE_CHARS:
        raise BadRequest("bad_venue", f"a venue name has 1 to {MAX_VENUE_CHARS} characters")
    token = await request.app[STORE].write(tokens.create, venue, data.name)
    return reply({"venue": venue, "token": token}, 201)


@routes.get("/api/v1/venues/{venue}/conflicts")
async def venue_conflicts(request: web.Request) -> web.Response:
    """The organizer's list of tickets admitted against their rule across nodes."""
    require_admin(request)
    store = request.app[STORE]
    venue_id = await store.read(feed.venue_id, request.match_info["venue"])
    admissions = await store.read(scans.venue_scans, venue_id)
    # The replay is pure and may be long for a big venue: keep it off the DB thread
    # (writes go on) and off the event loop, on a thread of its own.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="core-replay")
    try:
        loop = asyncio.get_running_loop()
        replayed = await loop.run_in_executor(pool, scans.replay_venue, admissions)
    finally:
        pool.shutdown(wait=False)
    return reply(await store.read(scans.venue_conflicts, admissions, replayed))


@routes.get("/api/v1/outbox")
async def outbox(request: web.Request) -> web.Response:
    require_admin(request)
    order = request.query.get("order")
    if order is not None and not _ORDER_NUMBER.fullmatch(order):
        return error(400, "bad_order", "order must be an order number")
    return reply(await request.app[STORE].read(jobs.outbox, order))


@routes.post("/api/v1/jobs/run")
async def run_jobs(request: web.Request) -> web.Response:
    require_admin(request)
    report = await request.app[STORE].write(jobs.run_deadlines, time.time())
    return reply(report.as_dict())
