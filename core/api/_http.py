"""HTTP plumbing shared by the core's routes: app keys, errors, bodies, auth."""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
from aiohttp import web

from core import tokens
from core.config import CoreConfig
from core.errors import BadRequest, CoreError, Forbidden, NotFound, Unauthorized
from core.feed import Notifier
from core.keys import FeedSigner
from core.models import MAX_ID
from core.snapshot import SnapshotDigests
from core.store import Store
from sync.codes import FEED_DOMAIN, SIGNATURE_HEADER

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


_LOGGER = logging.getLogger(__name__)

STORE: Final = web.AppKey("store", Store)
CONFIG: Final = web.AppKey("config", CoreConfig)
NOTIFIER: Final = web.AppKey("notifier", Notifier)
SNAPSHOT_SLOTS: Final = web.AppKey("snapshot_slots", asyncio.Semaphore)
SNAPSHOT_DIGESTS: Final = web.AppKey("snapshot_digests", SnapshotDigests)
MAX_CONCURRENT_SNAPSHOTS: Final = 4

MSGPACK: Final = "application/msgpack"
_json_encoder = msgspec.json.Encoder(decimal_format="string")
_msgpack_encoder = msgspec.msgpack.Encoder()
T = TypeVar("T")

_HTTP_CODES: Final = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=_json_encoder.encode({"error": code, "message": message}),
        content_type="application/json",
    )


def reply(data: Any, status: int = 200, request: web.Request | None = None) -> web.Response:
    """Encode *data* as JSON, or msgpack when the request accepts only that."""
    if request is not None and MSGPACK in request.headers.get("Accept", ""):
        return web.Response(status=status, body=_msgpack_encoder.encode(data), content_type=MSGPACK)
    return web.Response(
        status=status, body=_json_encoder.encode(data), content_type="application/json"
    )


def signed(response: web.Response, signer: FeedSigner, domain: bytes = FEED_DOMAIN) -> web.Response:
    """Add ``X-Gatekeeper-Signature`` over the exact body bytes (``sync.codes``)."""
    raw = response.body
    assert isinstance(raw, bytes), "signed responses carry a bytes body"
    response.headers[SIGNATURE_HEADER] = signer.header(raw, domain)
    return response


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except CoreError as exc:
        return error(exc.status, exc.code, exc.message)
    except msgspec.ValidationError as exc:
        return error(400, "invalid_body", str(exc))
    except msgspec.DecodeError as exc:
        return error(400, "malformed_body", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error(exc.status, code, exc.reason)
    except Exception:
        _LOGGER.exception("unexpected error on %s %s", request.method, request.path)
        return error(500, "internal", "unexpected error; see the core's log")


async def body(request: web.Request, kind: type[T], *, empty_ok: bool = False) -> T:
    """Decode the request body as *kind* (JSON, or msgpack by Content-Type)."""
    raw = await request.read()
    if not raw.strip():
        if empty_ok:
            raw = b"{}"
        else:
            raise BadRequest("missing_body", "this request needs a JSON body")
    if request.content_type == MSGPACK:
        return msgspec.msgpack.decode(raw, type=kind)
    return msgspec.json.decode(raw, type=kind)


def path_id(request: web.Request, name: str = "id") -> int:
    text = request.match_info[name]
    # isdigit() alone admits '²' and other digits int() refuses: ASCII only.
    value = int(text) if text.isascii() and text.isdigit() and len(text) < 20 else 0
    if not 1 <= value <= MAX_ID:
        raise NotFound("not_found", f"no such {name} {text!r}")
    return value


def require_admin(request: web.Request) -> None:
    token = _bearer(request)
    if not hmac.compare_digest(token.encode(), request.app[CONFIG].admin_token.encode()):
        raise Unauthorized("unauthorized", "admin token required")


async def require_venue(request: web.Request, venue: str) -> None:
    """Admin, or a node token of *venue*."""
    token = _bearer(request)
    if hmac.compare_digest(token.encode(), request.app[CONFIG].admin_token.encode()):
        return
    opened = await request.app[STORE].read(tokens.venue_of, token)
    if opened is None:
        raise Unauthorized("unauthorized", "unknown token")
    if opened != venue:
        raise Forbidden("forbidden", "this token is for another venue")


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("unauthorized", "missing bearer token")
    return token.strip()
