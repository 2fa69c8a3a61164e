"""HTTP and WebSocket API of the edge node (aiohttp). The public contract is DESIGN.md.

Every bad request gets a 4xx JSON ``{"error": code, "message": text}``; a failed commit
(the disk) gets a 503 so the device retries with the same scan_id. Nothing a client sends
produces a 500: the error middleware turns anything unexpected into a logged 500 JSON
only for genuine bugs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

import msgspec
from aiohttp import WSMsgType, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from yarl import URL

from edge.follower import Follower
from edge.index import Warmer, rss_bytes
from edge.messages import table_for
from edge.metrics import counter, gauge, histogram, scans_by_reason
from edge.model import GateProfile, ScanAnswer, ScanRequest
from edge.retention import Pruner
from edge.scan import (
    MAX_GATE_CHARS,
    MAX_SCAN_ID_BYTES,
    MAX_SCAN_ID_CHARS,
    InvalidGate,
    Resyncing,
    ScanService,
    UnknownGate,
)
from edge.scanlog import COMMIT_BUCKETS_S, CommitFailed, StoredAnswer

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1 << 20
"""Largest request body (a full offline batch); a single scan is a few hundred bytes."""
MAX_BATCH_SCANS: Final = 1000
MAX_WS_IN_FLIGHT: Final = 64
MAX_WS_MESSAGE_BYTES: Final = 16 * 1024
MAX_SEARCH_RESULTS: Final = 50
SEARCH_BUDGET_S: Final = 5.0
BODY_MIN_BYTES_PER_S: Final = 4096
"""Slowest upload still waited for: the body deadline grows with its Content-Length (a
1 MiB batch may take BODY_READ_S + 256 s on a poor link, and still lands)."""
BODY_READ_S: Final = 30.0
"""Longest a request body may take to arrive, plus its Content-Length at
``BODY_MIN_BYTES_PER_S`` (a chunked body has none: this alone). A body that stalls,
or whose chunking or compression breaks in a later TCP segment (aiohttp's parser then
never ends the stream), would otherwise hold its handler, and the device's connection,
forever."""
MAX_CODE_FIELD_CHARS: Final = 4096
"""Longer ``code`` fields are refused as a bad request; up to this, ``malformed``."""

_NON_ASCII: Final = re.compile(r"[^\x00-\x7f]+")

ScanId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SCAN_ID_CHARS)]
"""Also printable only (``_check_scan_id``): no control characters have a place in a
device's id, and a NUL would let a scan's id collide with a quick cancel's remembered
answer (``QUICK_CANCEL_PREFIX``). Checked in code: a regex costs more than the decode."""
GateName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_GATE_CHARS)]
CodeText = Annotated[str, msgspec.Meta(max_length=MAX_CODE_FIELD_CHARS)]


class ScanBody(ScanRequest, frozen=True):
    """A scan request as it arrives: ``ScanRequest`` with the caps on what a peer sends."""

    scan_id: ScanId
    code: CodeText
    gate: GateName


class BatchBody(msgspec.Struct, frozen=True):
    scans: Annotated[list[ScanBody], msgspec.Meta(max_length=MAX_BATCH_SCANS)]


class QuickCancelBody(msgspec.Struct, frozen=True):
    scan_id: ScanId
    code: CodeText


SERVICE: Final = web.AppKey("service", ScanService)
TOKEN: Final = web.AppKey("token", bytes)
NODE_ID: Final = web.AppKey("node_id", str)
STARTED: Final = web.AppKey("started", float)
FOLLOWER: Final = web.AppKey("follower", Follower)
WARMER: Final = web.AppKey("warmer", Warmer)
PRUNER: Final = web.AppKey("pruner", Pruner)
CATCH_ALL: Final = web.AppKey("catch_all", tuple[web.AbstractResource, ...])

_scan_decoder: Final = msgspec.json.Decoder(ScanBody)
_batch_decoder: Final = msgspec.json.Decoder(BatchBody)
_gate_decoder: Final = msgspec.json.Decoder(GateProfile)
_quick_decoder: Final = msgspec.json.Decoder(QuickCancelBody)
_json: Final = msgspec.json.Encoder()


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.close = close
        """Answer with ``Connection: close``: the rest of the request cannot be read."""


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=_json.encode({"error": code, "message": message}),
        content_type="application/json",
    )


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_json.encode(payload), content_type="application/json")


_HTTP_CODES: Final = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
}


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(handler: Handler, *, auth: bool = True) -> Handler:
    """Token check and the error contract around one handler: every failure is a JSON
    4xx (or a 503 when the disk failed or a resync is being stored: retry), never a bare
    500 for bad input. A wrapper per route costs less on the scan path than an
    application middleware."""

    async def run(request: web.Request) -> web.StreamResponse:
        try:
            if auth:
                _authorize(request)
            return await handler(request)
        except ApiError as exc:
            response = error_response(exc.status, exc.code, exc.message)
            if exc.close:
                response.force_close()
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, "http_error")
            return error_response(exc.status, code, exc.reason)
        except CommitFailed:
            return error_response(503, "commit_failed", "the scan could not be stored; retry")
        except Resyncing as exc:
            return error_response(503, "resyncing", str(exc))
        except ConnectionError:
            # The client left (a reset right after a WebSocket upgrade, say): nobody
            # reads an answer, and it is no bug of ours. Closed without one.
            response = web.Response(status=400)
            response.force_close()
            return response
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal", "internal error")

    return run


def _authorize(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer ") and header[:7].lower() == "bearer ":
        header = "Bearer " + header[7:]  # the scheme is case-insensitive (RFC 9110)
    if not hmac.compare_digest(header.encode(errors="replace"), request.app[TOKEN]):
        raise ApiError(401, "unauthorized", "missing or wrong bearer token")


def _scan_id_problem(scan_id: str) -> str | None:
    if not scan_id.isprintable():
        return "scan_id must not contain control characters"
    # Only a long id can exceed the key size; the hot path skips the encode.
    if len(scan_id) * 4 > MAX_SCAN_ID_BYTES and len(scan_id.encode()) > MAX_SCAN_ID_BYTES:
        return f"scan_id must be at most {MAX_SCAN_ID_BYTES} bytes in UTF-8"
    return None


def _check_scan_id(scan_id: str) -> None:
    problem = _scan_id_problem(scan_id)
    if problem is not None:
        raise ApiError(400, "invalid", problem)


async def _body(request: web.Request, decoder: msgspec.json.Decoder[Any]) -> Any:
    deadline_s = BODY_READ_S + (request.content_length or 0) / BODY_MIN_BYTES_PER_S
    try:
        if request.content.is_eof():  # all here already (a scan): no timer to arm
            raw = await request.read()
        else:
            async with asyncio.timeout(deadline_s):
                raw = await request.read()
    except TimeoutError:
        request.content.feed_eof()
        raise ApiError(408, "body_timeout", f"the body did not arrive within {deadline_s:g} s",
                       close=True) from None
    except (RequestPayloadError, HttpProcessingError):
        # A body that does not decode under its Content-Encoding, a broken chunk. The
        # stream keeps its error: mark it ended, or aiohttp's drain after the answer
        # raises it again (logged as unhandled, and the answer may be lost).
        request.content.feed_eof()
        raise ApiError(400, "bad_body", "the body could not be read (its Content-Encoding or "
                       "chunking is broken)", close=True) from None
    except ConnectionResetError:
        # The client left mid-body: nobody reads this answer, but it is no bug of ours.
        raise ApiError(400, "incomplete_body", "the connection closed mid-body") from None
    if not raw:
        raise ApiError(400, "empty_body", "a JSON body is required")
    return _decode(decoder, raw)


def _decode(decoder: msgspec.json.Decoder[Any], raw: str | bytes) -> Any:
    """*raw* decoded, or an ``ApiError`` saying what is wrong with it."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec raises UnicodeDecodeError for invalid UTF-8 inside a JSON string.
        raise ApiError(400, "bad_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        # Nesting deeper than the interpreter's limit, inside a field the struct does
        # not even have (msgspec skips unknown fields recursively).
        raise ApiError(400, "bad_json", "body is nested too deeply") from None


def render(scan_id: str, answer: StoredAnswer, messages: dict[str, str]) -> ScanAnswer:
    return ScanAnswer(
        scan_id, answer.result, answer.reason, messages[answer.reason], answer.direction,
        answer.ticket, answer.entries,
    )


async def post_scan(request: web.Request) -> web.Response:
    body: ScanBody = await _body(request, _scan_decoder)
    _check_scan_id(body.scan_id)
    try:
        answer = await request.app[SERVICE].scan(body)
    except UnknownGate:
        raise ApiError(404, "unknown_gate", f"no gate profile named {body.gate!r}") from None
    messages = table_for(request.headers.get("Accept-Language"))
    return web.Response(
        body=_json.encode(render(body.scan_id, answer, messages)),
        content_type="application/json",
    )


async def post_batch(request: web.Request) -> web.Response:
    body: BatchBody = await _body(request, _batch_decoder)
    for scan in body.scans:
        _check_scan_id(scan.scan_id)
    service = request.app[SERVICE]
    try:
        answers = await service.scan_batch(list(body.scans))
    except UnknownGate as exc:
        raise ApiError(404, "unknown_gate", f"no gate profile named {exc.args[0]!r}") from None
    messages = table_for(request.headers.get("Accept-Language"))
    results = [render(s.scan_id, a, messages) for s, a in zip(body.scans, answers, strict=True)]
    return json_response({"results": results})


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE_BYTES, heartbeat=30.0)
    await ws.prepare(request)
    service = request.app[SERVICE]
    messages = table_for(request.headers.get("Accept-Language"))
    slots = asyncio.Semaphore(MAX_WS_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()

    async def one(raw: str | bytes) -> None:
        try:
            try:
                body = _decode(_scan_decoder, raw)
            except ApiError as exc:
                # With the scan_id when it can be read: a device with several scans in
                # flight must know which one was refused, or it waits out its timeout.
                await ws.send_bytes(_ws_error("invalid", exc.message, _scan_id_of(raw)))
                return
            try:
                problem = _scan_id_problem(body.scan_id)
                if problem is not None:
                    await ws.send_bytes(_ws_error("invalid", problem))
                    return
                answer = await service.scan(body)
            except UnknownGate:
                await ws.send_bytes(_ws_error("unknown_gate", body.gate, body.scan_id))
                return
            except CommitFailed:
                await ws.send_bytes(_ws_error("commit_failed", "retry", body.scan_id))
                return
            if not ws.closed:
                await ws.send_bytes(_json.encode(render(body.scan_id, answer, messages)))
        except ConnectionError:
            pass
        except Exception:  # a bug: logged and answered, never a silently dead task
            log.exception("websocket scan failed")
            if not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await ws.send_bytes(_ws_error("internal", "internal error"))
        finally:
            slots.release()

    async for msg in ws:
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            await slots.acquire()
            task = asyncio.create_task(one(msg.data), name="edge-ws-scan")
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif msg.type == WSMsgType.ERROR:
            break
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
    return ws


class _IdOnly(msgspec.Struct):
    scan_id: Any = None


_id_decoder: Final = msgspec.json.Decoder(_IdOnly)


def _scan_id_of(raw: str | bytes) -> str | None:
    """The ``scan_id`` of a message that did not decode as a scan, if it has a usable
    one (a string the API would take as a scan_id); else None."""
    try:
        scan_id = _id_decoder.decode(raw).scan_id
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    if (isinstance(scan_id, str) and 0 < len(scan_id) <= MAX_SCAN_ID_CHARS
            and _scan_id_problem(scan_id) is None):
        return scan_id
    return None


def _ws_error(code: str, message: str, scan_id: str | None = None) -> bytes:
    payload: dict[str, str] = {"error": code, "message": message}
    if scan_id is not None:
        payload["scan_id"] = scan_id
    return _json.encode(payload)


async def put_gate(request: web.Request) -> web.Response:
    name = request.match_info["gate"]
    if not 0 < len(name) <= MAX_GATE_CHARS or not name.isprintable():
        raise ApiError(400, "invalid", "gate name must be 1-64 printable characters")
    profile: GateProfile = await _body(request, _gate_decoder)
    try:
        profile = await request.app[SERVICE].put_gate(name, profile)
    except InvalidGate as exc:
        raise ApiError(422, "invalid_gate", str(exc)) from None
    return json_response(_gate_json(name, profile, len(request.app[SERVICE].gates[name].dates)))


def _gate_json(name: str, profile: GateProfile, admitted_dates: int) -> dict[str, Any]:
    return {
        "gate": name, "mode": profile.mode, "dates": profile.dates, "events": profile.events,
        "zones": profile.zones, "admitted_dates": admitted_dates,
    }


async def get_gates(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    gates = [
        _gate_json(name, profile, len(service.gates[name].dates) if name in service.gates else 0)
        for name, profile in sorted(service.profiles.items())
    ]
    return json_response({"gates": gates})


async def post_quick_cancel(request: web.Request) -> web.Response:
    body: QuickCancelBody = await _body(request, _quick_decoder)
    _check_scan_id(body.scan_id)
    answer = await request.app[SERVICE].quick_cancel(body.scan_id, body.code)
    return json_response({"scan_id": body.scan_id, "result": answer.result,
                          "reason": answer.reason})


async def get_search(request: web.Request) -> web.Response:
    sent = request.query.get("q", "").strip()
    if not 2 <= len(sent) <= 100:
        raise ApiError(400, "invalid", "q must be 2-100 characters")
    query = sent.lower()
    service = request.app[SERVICE]
    words = query.split()
    # The records are pre-filtered on their raw bytes, where only ASCII lower-cases: use
    # the ASCII runs of the words as sent, lower-cased the same way (Unicode lower-casing
    # can add ASCII: "İ" gives "i" and a combining dot, which the bytes of "İ" lack).
    # The haystack check below is the exact one.
    needles = [
        run.encode().lower() for w in sent.split() for run in _NON_ASCII.split(w) if run
    ]
    results: list[dict[str, Any]] = []
    after: bytes | None = None
    deadline = time.monotonic() + SEARCH_BUDGET_S
    while len(results) < MAX_SEARCH_RESULTS and time.monotonic() < deadline:
        matches, after = service.index.search_chunk(needles, after)
        for record in matches:
            haystack = f"{record.order} {record.holder}".lower()
            if not all(w in haystack for w in words):
                continue
            state = service.state_of(record.id)
            results.append({
                "id": record.id, "kind": "pass" if record.kind else "ticket",
                "order": record.order, "holder": record.holder,
                "status": record.status.name.lower(), "event": record.event,
                "date": record.date, "zone": record.zone, "entries": state.entries,
                "inside": bool(state.inside),
            })
        if after is None:
            break
        await asyncio.sleep(0)  # let scans through between chunks
    return json_response({"q": query, "results": results[:MAX_SEARCH_RESULTS],
                          "complete": after is None})


async def get_status(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    now = time.time()
    counts = service.index.counts()
    follower = request.app.get(FOLLOWER)
    pruner = request.app.get(PRUNER)
    rss = rss_bytes()
    mapped = service.index.mapped_bytes()
    committer = service.committer
    return json_response({
        "node_id": request.app[NODE_ID],
        "venue": service.catalog.venue,
        "uptime_s": round(now - request.app[STARTED], 3),
        "index": {"records": counts["records"], "codes": counts["codes"],
                  "media": counts["media"], "dates": len(service.dates),
                  "page_cache_warm": request.app[WARMER].status()},
        "sync": (
            follower.status(now) if follower is not None
            else {"cursor": service.cursor(), "lag_changes": None, "lag_s": None,
                  "outbox": None, "connected": False, "core": None}
        ),
        "scans": {"total": service.counters.scans, "accepted": service.counters.accepted,
                  "per_s": round(service.rate.rate(now), 2),
                  "logged": committer.scans_logged(),
                  "retention": pruner.status() if pruner is not None else None},
        "gates": sorted(service.profiles),
        "devices": [],
        "commits": {"count": committer.commits, "ops": committer.committed_ops,
                    "journal": committer.journal_status()},
        "memory": {"rss_bytes": rss, "lmdb_mapped_bytes": mapped,
                   "rss_minus_lmdb_bytes": rss - mapped},
    })


async def get_metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    pruner = request.app.get(PRUNER)
    c = service.counters
    committer = service.committer
    lines = [
        *scans_by_reason(c),
        *counter("edge_commits_total",
                 "Group commits: a journal append of scans, or an index transaction for "
                 "any other write.", committer.commits),
        *counter("edge_committed_ops_total",
                 "Writes in group commits (a loop round of scans, a gate, a feed batch).",
                 committer.committed_ops),
        *counter("edge_commit_seconds_total",
                 "Time spent writing and fsyncing group commits (with the wait for the "
                 "applier, for writes other than scans).",
                 round(committer.commit_seconds, 6)),
        *histogram("edge_commit_duration_seconds",
                   "Duration of one group commit (write + fsync; with the wait for the "
                   "applier, for writes other than scans).", COMMIT_BUCKETS_S,
                   committer.commit_buckets, committer.commit_seconds),
        *counter("edge_quick_cancels_total", "Printed stock quick-cancelled.", c.quick_cancels),
        *counter("edge_signature_checks_total", "Ed25519 verifications (index misses).",
                 c.signature_checks),
        *gauge("edge_pending_scans", "Scans waiting for their commit.",
               len(service.pending_answers)),
        *gauge("edge_journal_unapplied_scans",
               "Scans durable in the journal, not yet stored in the index.",
               committer.unapplied_scans),
        *counter("edge_journal_applies_total",
                 "Transactions of the applier: journaled scans stored in the index, with "
                 "the sync cursors that waited for them.", committer.applies),
        *counter("edge_journal_barriers_total",
                 "Writes other than scans and sync cursors: each made the applier store "
                 "the journaled scans at once while new scans waited.", committer.barriers),
        *counter("edge_journal_apply_seconds_total",
                 "Time the applier spent storing journaled scans in the index.",
                 round(committer.apply_seconds, 6)),
        *counter("edge_journal_apply_failures_total",
                 "Failed attempts to store journaled scans in the index (they stay in the "
                 "journal and are tried again).", committer.apply_failures),
        *counter("edge_pruned_scans_total",
                 "Scan log entries (and their answers) deleted after the retention.",
                 pruner.pruned if pruner is not None else 0),
        "",
    ]
    return web.Response(text="\n".join(lines), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type": "version=0.0.4"})


class AnyTarget(web.Resource):
    """Matches every request target, also one that is no path at all (``CONNECT
    host:port``, ``OPTIONS *``), which the ``/{tail:.*}`` route cannot match and
    aiohttp would answer with a plain-text 404. Indexed under "/" after that route, it
    is reached only when nothing else matched: nothing on the routes' way."""

    @property
    def canonical(self) -> str:
        return "/"

    def _match(self, path: str) -> dict[str, str] | None:
        return {"tail": path}

    def raw_match(self, path: str) -> bool:
        return False

    def get_info(self) -> Any:  # aiohttp's own type for it is private
        return {}

    def add_prefix(self, prefix: str) -> None:
        raise NotImplementedError("not for sub-applications")

    def url_for(self, *args: str, **kwargs: str) -> URL:
        raise NotImplementedError("matches anything: no URL to build")


async def no_route(request: web.Request) -> web.Response:
    """Every path and method no route takes: 405 on a known path, else 404."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource in request.app[CATCH_ALL]:
            continue
        match, methods = await resource.resolve(request)
        if match is None:
            allowed |= methods
    if allowed:
        response = error_response(405, "method_not_allowed",
                                  f"{request.method} not allowed on {request.path}")
        response.headers["Allow"] = ", ".join(sorted(allowed))
        return response
    target = request.path if request.path.startswith("/") else request.raw_path
    return error_response(404, "not_found", f"no such path {target}")


class BadRequestLogs(logging.Filter):
    """On aiohttp's server logger: a request its parser refuses (a malformed request
    line or header, a duplicate Content-Length) is answered 400 by aiohttp and logged at
    ERROR with a traceback, ~570 bytes each: any device on the venue network could fill
    the disk at ~1 MB/s. Such records become one WARNING line without the traceback, at
    most one per ``EVERY_S``, which counts those left out since."""

    EVERY_S: Final = 10.0

    def __init__(self) -> None:
        super().__init__()
        self._last = -self.EVERY_S
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno < logging.ERROR or not isinstance(exc, HttpProcessingError):
            return True  # aiohttp's own DEBUG for non-HTTP traffic stays as it is
        now = time.monotonic()
        if now - self._last < self.EVERY_S:
            self.suppressed += 1
            return False
        self._last = now
        more = f" ({self.suppressed} more since)" if self.suppressed else ""
        self.suppressed = 0
        record.msg = "bad HTTP request refused (400): %s%s"
        record.args = (str(exc).replace("\n", " ")[:200], more)
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


_BAD_REQUEST_LOGS: Final = BadRequestLogs()


def add_routes(app: web.Application) -> None:
    server_log = logging.getLogger("aiohttp.server")
    if _BAD_REQUEST_LOGS not in server_log.filters:
        server_log.addFilter(_BAD_REQUEST_LOGS)
    r = app.router
    r.add_post("/api/v1/scans", guarded(post_scan))
    r.add_post("/api/v1/scans/batch", guarded(post_batch))
    # GET only: a HEAD with upgrade headers was answered 101 and switched protocols.
    r.add_get("/api/v1/ws", guarded(websocket), allow_head=False)
    r.add_put("/api/v1/gates/{gate}", guarded(put_gate))
    r.add_get("/api/v1/gates", guarded(get_gates))
    r.add_post("/api/v1/quick-cancel", guarded(post_quick_cancel))
    r.add_get("/api/v1/search", guarded(get_search))
    r.add_get("/api/v1/status", guarded(get_status))
    r.add_get("/metrics", guarded(get_metrics, auth=False))
    unrouted = guarded(no_route, auth=False)
    catch_all = r.add_route("*", "/{tail:.*}", unrouted)
    any_target = AnyTarget()
    any_target.add_route("*", unrouted)
    r.register_resource(any_target)
    assert catch_all.resource is not None
    app[CATCH_ALL] = (catch_all.resource, any_target)
