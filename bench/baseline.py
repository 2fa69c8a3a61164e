"""Bare aiohttp + uvloop server answering scan-sized JSON: the yardstick for the node.

``python -m bench.baseline --port P`` (or ``python -m bench baseline``). It does what
any JSON endpoint must do and nothing of the domain: check the bearer header is there,
decode the scan body with msgspec, encode an answer of the node's shape and size.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import msgspec
from aiohttp import web

from edge.model import Direction, Reason, Result, ScanAnswer, ScanRequest, TicketInfo

_decoder = msgspec.json.Decoder(ScanRequest)
_encoder = msgspec.json.Encoder()
_TICKET = TicketInfo(123456, "ticket", 1, 1, 1, "Ana Meier", "B00123456")


async def scan(request: web.Request) -> web.Response:
    if "Authorization" not in request.headers:
        return web.json_response({"error": "unauthorized", "message": "no token"}, status=401)
    try:
        body = _decoder.decode(await request.read())
    except msgspec.DecodeError as exc:
        return web.json_response({"error": "bad_request", "message": str(exc)}, status=400)
    direction = Direction.ENTRY if body.direction == Direction.AUTO else body.direction
    answer = ScanAnswer(body.scan_id, Result.ACCEPTED, Reason.OK, "Welcome", direction, _TICKET, 1)
    return web.Response(body=_encoder.encode(answer), content_type="application/json")


async def status(request: web.Request) -> web.Response:
    return web.json_response({"node": "baseline"})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/api/v1/scans", scan)
    app.router.add_get("/api/v1/status", status)
    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8899)


def main(args: argparse.Namespace) -> int:
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(make_app(), host=args.host, port=args.port, access_log=None, print=None, loop=loop)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
