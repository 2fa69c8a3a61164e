"""Adversarial inputs through the real HTTP/WebSocket server: every bad request gets a
JSON 4xx or a ``rejected`` answer, nothing produces a 500 or kills the node, and the
same scan_id always gets the same answer and counts once.

Comments marked ``Was:`` describe what a test caught before its fix."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import logging
import os
import socket
import struct
import zlib
from typing import Any

import aiohttp
import msgspec
import pytest

from edge import messages
from sync.codes import CODE_V1_CHARS
from sync.snapshot import Channel
from tests.conftest import TOKEN, EdgeNode
from tests.venue import Venue

SCAN = "/api/v1/scans"
BATCH = "/api/v1/scans/batch"
QC = "/api/v1/quick-cancel"
WS = "/api/v1/ws"
TIMEOUT_S = 3.0
AUTH = f"Authorization: Bearer {TOKEN}\r\n".encode()


# -- helpers ---------------------------------------------------------------------------


async def raw(node: EdgeNode, method: str, path: str, data: Any = None,
              headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, str, bytes]:
    """One request with a raw body; the status, Content-Type and body bytes."""
    async with node.session.request(method, node.url + path, data=data,
                                    headers=headers if headers is not None else node.headers(),
                                    **kw) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


def assert_error(status: int, ctype: str, body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, (status, body)
    assert ctype.startswith("application/json"), (ctype, body)
    payload = msgspec.json.decode(body)
    assert isinstance(payload, dict) and set(payload) == {"error", "message"}, payload
    assert isinstance(payload["error"], str) and payload["error"]
    assert isinstance(payload["message"], str)
    return payload


def port_of(node: EdgeNode) -> int:
    return int(node.url.rsplit(":", 1)[1])


async def raw_http(node: EdgeNode, request: bytes, *, half_close: bool = False) -> bytes:
    """Write *request* bytes as they are on a new connection; everything read back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(node))
    try:
        writer.write(request)
        await writer.drain()
        if half_close:
            writer.write_eof()
        return await asyncio.wait_for(reader.read(), TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def split_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


async def logged(node: EdgeNode) -> int:
    status, body = await node.call("GET", "/api/v1/status")
    assert status == 200, body
    return int(body["scans"]["logged"])


async def wait_logged(node: EdgeNode, count: int) -> int:
    """The scan log size once it reaches *count* (or after a bounded wait)."""
    got = await logged(node)
    for _ in range(60):
        if got >= count:
            break
        await asyncio.sleep(0.05)
        got = await logged(node)
    return got


async def assert_serving(node: EdgeNode) -> None:
    """The node still decides a valid scan: a signed code it has never seen is admitted."""
    answer = await node.scan(node.venue.unsynced())
    assert (answer["result"], answer["reason"]) == ("accepted", "ok"), answer


def scan_json(scan_id: str, code: str, gate: str = "main", **extra: Any) -> bytes:
    return msgspec.json.encode({"scan_id": scan_id, "code": code, "gate": gate, **extra})


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.fixture
async def node(edge: Any, venue: Venue) -> EdgeNode:
    venue.add_ticket("t")
    started: EdgeNode = await edge.start()
    await started.gate("main", mode="single", dates=[10])
    return started


# -- raw WebSocket client (frames the aiohttp client will not send) --------------------


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    size = len(payload)
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + size.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawWS:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, node: EdgeNode) -> RawWS:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(node))
        key = base64.b64encode(os.urandom(16))
        writer.write(b"GET " + WS.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: " + key + b"\r\n" + AUTH + b"\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        ws = cls(reader, writer)
        if not head.startswith(b"HTTP/1.1 101"):
            await ws.close()
            raise AssertionError(head)
        return ws

    def send(self, opcode: int, payload: bytes, **kw: bool) -> None:
        self.writer.write(ws_frame(opcode, payload, **kw))

    async def recv(self) -> tuple[int, bytes]:
        async def read() -> tuple[int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            size = b1 & 0x7F
            if size == 126:
                size = int.from_bytes(await self.reader.readexactly(2), "big")
            elif size == 127:
                size = int.from_bytes(await self.reader.readexactly(8), "big")
            return b0 & 0x0F, await self.reader.readexactly(size)

        return await asyncio.wait_for(read(), TIMEOUT_S)

    async def recv_until_close(self) -> list[tuple[int, bytes]]:
        """Frames until the server's close frame (included), or EOF."""
        frames: list[tuple[int, bytes]] = []
        for _ in range(200):
            try:
                frame = await self.recv()
            except asyncio.IncompleteReadError:
                break
            frames.append(frame)
            if frame[0] == 0x8:
                break
        return frames

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    def abort(self) -> None:
        self.writer.transport.abort()


async def ws_connect(node: EdgeNode) -> aiohttp.ClientWebSocketResponse:
    return await node.session.ws_connect(node.url + WS, headers=node.headers())


async def ws_receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), TIMEOUT_S)
    assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
    payload = msgspec.json.decode(msg.data)
    assert isinstance(payload, dict)
    return payload


# -- JSON bodies -----------------------------------------------------------------------


# Was: a JSON body nested deeper than ~1000 levels inside a field the struct does not
# know (msgspec skips unknown fields recursively) made msgspec raise RecursionError:
# POST /api/v1/scans (and /batch, /quick-cancel) with
# {"x": [[[...5000 levels...]]], "scan_id": "d", "code": "x", "gate": "main"}
# answered 500 {"error": "internal", "message": "internal error"}.
@pytest.mark.parametrize(
    ("path", "rest"),
    [
        (SCAN, b'"scan_id": "d", "code": "x", "gate": "main"'),
        (BATCH, b'"scans": []'),
        (QC, b'"scan_id": "d", "code": "x"'),
    ],
    ids=["scan", "batch", "quick-cancel"],
)
async def test_deeply_nested_unknown_field_is_a_400(node: EdgeNode, path: str,
                                                    rest: bytes) -> None:
    for depth in (5_000, 200_000):
        body = b'{"x": ' + nested(depth) + b", " + rest + b"}"
        status, ctype, data = await raw(node, "POST", path, data=body)
        assert_error(status, ctype, data, 400)
    assert await logged(node) == 0
    await assert_serving(node)


async def test_deeply_nested_known_field_is_a_400(node: EdgeNode) -> None:
    """Nesting where a known field's type is checked is refused at the first level."""
    for path, body in (
        (SCAN, b'{"scan_id": ' + nested(100_000) + b"}"),
        (BATCH, b'{"scans": [' + nested(100_000) + b"]}"),
        ("/api/v1/gates/main", b'{"mode": "multi", "dates": ' + nested(100_000) + b"}"),
    ):
        method = "PUT" if "gates" in path else "POST"
        status, ctype, data = await raw(node, method, path, data=body)
        assert_error(status, ctype, data, 400)
    await assert_serving(node)


@pytest.mark.parametrize(
    "data",
    [
        b'\xef\xbb\xbf{"scan_id": "a", "code": "x", "gate": "main"}',
        b'{"scan_id": "a", "code": "x", "gate": "main"}x',
        b'{"scan_id": "a", "code": "x", "gate": "main"}{"scan_id": "b"}',
        b'{"scan_id": "a", "code": "x", "gate": "main", "scanned_at": NaN}',
        b'{"scan_id": "a", "code": "x", "gate": "main", "scanned_at": Infinity}',
        b'{"scan_id": "a", "code": "x", "gate": "main", "scanned_at": -Infinity}',
        b'{"scan_id": "a", "code": "x", "gate": "main", "scanned_at": 1e400}',
        b'{"scan_id": "a", "code": "x", "gate": "main", "scanned_at": -1e400}',
        b'{"scan_id": "a", "code": "x", "gate": "main", "scanned_at": 1' + b"0" * 400 + b"}",
        b'{"scan_id": "a", "code": "x", "gate": "main", "scanned_at": true}',
        b'{"scan_id": "a", "code": "x", "gate": "main", "scanned_at": "1e3"}',
        b'{"scan_id": "a", "code": "\\udfff", "gate": "main"}',
        b'{"scan_id": "a", "code": "x", "gate": "\\ud83d"}',
        b'{"scan_id": "\\ud83d\\u0041", "code": "x", "gate": "main"}',
        b'{"scan_id": "a", "code": "x\xc3", "gate": "main"}',
        b'{"scan_id": "a", "code": "x", "gate": "m\xed\xa0\x80"}',
        b'{"scan_id": "a\xf8\x88\x80\x80\x80", "code": "x", "gate": "main"}',
        b'{"scan_id": "a", "code": "x", "gate": "main"',
        b'{"scan_id": "a", "code": "x", "gate": "ma',
        b"scan_id=a&code=x&gate=main",
        b"--b\r\nContent-Disposition: form-data; name=scan_id\r\n\r\na\r\n--b--\r\n",
        b"\x00",
        b" ",
    ],
)
async def test_more_bad_scan_bodies(node: EdgeNode, data: bytes) -> None:
    status, ctype, body = await raw(node, "POST", SCAN, data=data)
    assert_error(status, ctype, body, 400)
    if data.strip():  # (blank would make an empty, valid batch)
        status, ctype, body = await raw(node, "POST", BATCH,
                                        data=b'{"scans": [' + data + b"]}")
        assert_error(status, ctype, body, 400)
    assert await logged(node) == 0


@pytest.mark.parametrize(
    "data",
    [b'{"scans": null}', b'{"scans": {}}', b'{"scans": [null]}', b'{"scans": [[]]}',
     b'{"scans": "x"}', b'{"scan": []}', b"[]", b'{"scans": [{}]}'],
)
async def test_bad_batch_shapes(node: EdgeNode, data: bytes) -> None:
    status, ctype, body = await raw(node, "POST", BATCH, data=data)
    assert_error(status, ctype, body, 400)


@pytest.mark.parametrize(
    "ctype",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=b",
     "application/octet-stream", "application/json; charset=latin-1", "garbage"],
)
async def test_content_type_is_not_what_decides(node: EdgeNode, ctype: str) -> None:
    """The node reads the body as JSON whatever the Content-Type says (no 415): a valid
    body is decided, an invalid one is a JSON 400."""
    code = node.venue.codes["t"]
    headers = node.headers(**{"Content-Type": ctype})
    status, rtype, body = await raw(node, "POST", SCAN, data=b"not json", headers=headers)
    assert_error(status, rtype, body, 400)
    status, rtype, body = await raw(node, "POST", SCAN, data=scan_json(f"c-{ctype}", code),
                                    headers=headers)
    assert status == 200 and rtype.startswith("application/json"), body
    assert msgspec.json.decode(body)["reason"] in ("ok", "already_used")


# -- Content-Encoding ------------------------------------------------------------------


# Was: a body that does not decode under its Content-Encoding made request.read()
# raise aiohttp's RequestPayloadError (not a web.HTTPException): POST /api/v1/scans with
# "Content-Encoding: gzip" (or deflate) and the body b"definitely not compressed"
# answered 500 {"error": "internal", "message": "internal error"} with a traceback.
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_undecodable_content_encoding_is_a_400(node: EdgeNode, encoding: str) -> None:
    headers = node.headers(**{"Content-Encoding": encoding})
    status, ctype, body = await raw(node, "POST", SCAN, data=b"definitely not compressed",
                                    headers=headers)
    assert_error(status, ctype, body, 400)
    await assert_serving(node)


async def test_compressed_bodies_decided_and_bomb_refused(node: EdgeNode) -> None:
    code = node.venue.codes["t"]
    for encoding, packed in (
        ("gzip", gzip.compress(scan_json("gz-1", code))),
        ("deflate", zlib.compress(scan_json("gz-1", code))),
    ):
        status, _ctype, body = await raw(node, "POST", SCAN, data=packed,
                                         headers=node.headers(**{"Content-Encoding": encoding}))
        assert status == 200, body
        assert msgspec.json.decode(body)["reason"] == "ok"  # the same scan_id both times
    # 20 KiB of gzip that inflate to 20 MiB: refused at the 1 MiB body cap.
    bomb = gzip.compress(b" " * (20 << 20))
    assert len(bomb) < 64 << 10
    status, ctype, body = await raw(node, "POST", BATCH, data=bomb,
                                    headers=node.headers(**{"Content-Encoding": "gzip"}))
    assert_error(status, ctype, body, 413)
    assert await logged(node) == 1
    await assert_serving(node)


async def test_chunked_body_over_the_cap_is_413(node: EdgeNode) -> None:
    async def chunks() -> Any:
        yield b'{"scans": ['
        for _ in range(40):
            yield b'{"scan_id": "a", "code": "x", "gate": "main"},' * 1000

    status, ctype, body = await raw(node, "POST", BATCH, data=chunks())
    assert_error(status, ctype, body, 413)
    assert await logged(node) == 0
    await assert_serving(node)


# Was: a client that sends part of its body and then goes away (Content-Length: 100,
# 11 bytes, FIN) made request.read() raise ConnectionResetError inside ``guarded``,
# logged as "unhandled error on POST /api/v1/scans" with a traceback: a dropped Wi-Fi
# connection was reported as an internal bug of the node.
async def test_client_gone_mid_body_is_not_an_internal_error(
    node: EdgeNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="edge.api")
    out = await raw_http(node, b"POST /api/v1/scans HTTP/1.1\r\nHost: x\r\n" + AUTH
                         + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                         + b'{"scan_id":', half_close=True)
    assert out == b"" or split_response(out)[0] == 400, out
    await assert_serving(node)
    await asyncio.sleep(0.1)
    internal = [r for r in caplog.records if r.name == "edge.api"]
    assert not internal, [r.getMessage() for r in internal]


@pytest.mark.parametrize("then", [
    b"ZZ\r\n",  # a broken chunk-size line, in a later TCP segment than the head
    b"",  # nothing more: a stalled sender
], ids=["broken-chunk-later", "stalled"])
async def test_a_body_that_never_completes_gets_a_408_and_the_connection_closes(
    node: EdgeNode, monkeypatch: pytest.MonkeyPatch, then: bytes
) -> None:
    """Was: aiohttp's parser, failing on bytes that came after the head, never ended the
    body stream, and ``request.read()`` waited forever: no answer, the device's
    connection and the handler held until the client gave up."""
    monkeypatch.setattr("edge.api.BODY_READ_S", 0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(node))
    try:
        writer.write(b"POST /api/v1/scans HTTP/1.1\r\nHost: x\r\n" + AUTH
                     + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"sca\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(then)
        await writer.drain()
        out = await asyncio.wait_for(reader.read(), TIMEOUT_S)  # EOF: closed by the node
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status, headers, body = split_response(out)
    payload = assert_error(status, headers.get("content-type", ""), body, 408)
    assert payload["error"] == "body_timeout" and headers.get("connection") == "close"
    await assert_serving(node)


async def test_a_client_reset_right_after_a_websocket_upgrade_is_no_internal_error(
    node: EdgeNode, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: ``ws.prepare`` raised on the closing transport and ``guarded`` logged an
    "unhandled error" with a traceback for each device that simply dropped off."""
    caplog.set_level(logging.ERROR, logger="edge.api")
    for _ in range(20):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port_of(node))
        writer.write(b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\n"
                     + AUTH + b"\r\n")
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, at once
    await assert_serving(node)
    await asyncio.sleep(0.2)
    internal = [r for r in caplog.records if r.name == "edge.api"]
    assert not internal, [r.getMessage() for r in internal]


# -- scanned_at ------------------------------------------------------------------------


async def test_extreme_scanned_at_in_a_batch(node: EdgeNode) -> None:
    """Finite but absurd device times: judged (too early), or clamped to the node's clock
    plus the allowed skew (then inside the show's window): never a 500; a retry of the
    batch gets the same answers and logs nothing more."""
    code = node.venue.codes["t"]
    times: list[float] = [-1.7e308, -(2.0**63), -1.0, 0.0, 1.5, 2.0**63, 1.7e308]
    scans = [{"scan_id": f"x{i}", "code": code, "gate": "main", "scanned_at": at}
             for i, at in enumerate(times)]
    status, body = await node.call("POST", BATCH, {"scans": scans})
    assert status == 200, body
    reasons = [r["reason"] for r in body["results"]]
    assert reasons == ["too_early"] * 5 + ["ok", "already_used"], reasons
    status, again = await node.call("POST", BATCH, {"scans": list(reversed(scans))})
    assert status == 200
    assert list(reversed(again["results"])) == body["results"]
    assert await logged(node) == len(times)


async def test_scanned_at_on_a_live_scan_is_ignored(node: EdgeNode) -> None:
    answer = await node.scan(node.venue.codes["t"], scanned_at=-1.7e308)
    assert answer["reason"] == "ok"


# -- scan_id limits --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scan_id", "status"),
    [
        ("\U0001f600" * 127, 200),  # 127 characters, 508 bytes: the byte limit exactly
        ("\U0001f600" * 124 + "\u20ac" * 4, 200),  # 128 characters, 508 bytes
        ("\U0001f600" * 127 + "a", 400),  # 128 characters, 509 bytes
        ("\u00e9" * 128, 200),  # 256 bytes
        ("\u20ac" * 128, 200),  # 384 bytes
        ("a" * 128 + "\u0301", 400),  # 129 code points
        (" ", 200),
        ("\u65e5\u672c", 200),
        ("\u00a0", 400),  # no-break space
        ("a\u200db", 400),  # zero-width joiner
        ("a\u2028b", 400),  # line separator
        ("\ufeffa", 400),  # byte order mark
        ("\U000e0041", 400),  # tag character
        ("\ue000", 400),  # private use
        ("\x7f", 400),
        ("a\x85", 400),
    ],
)
async def test_scan_id_bytes_and_characters(node: EdgeNode, scan_id: str,
                                            status: int) -> None:
    code = node.venue.codes["t"]
    got, first = await node.call("POST", SCAN, {"scan_id": scan_id, "code": code,
                                                "gate": "main"})
    assert got == status, first
    got_qc, qc = await node.call("POST", QC, {"scan_id": scan_id, "code": "NOPE"})
    assert got_qc == status, qc
    got_b, batch = await node.call("POST", BATCH, {"scans": [
        {"scan_id": scan_id, "code": code, "gate": "main"}]})
    assert got_b == status, batch
    if status == 200:
        assert first["scan_id"] == scan_id and first["reason"] == "ok"
        assert batch["results"] == [first]
        assert (qc["result"], qc["reason"]) == ("rejected", "unknown")
        again = await node.call("POST", QC, {"scan_id": scan_id, "code": code})
        assert again == (200, qc)
        assert await logged(node) == 2
    else:
        assert set(first) == {"error", "message"}
        assert await logged(node) == 0
    await assert_serving(node)


# -- codes -----------------------------------------------------------------------------


def _rebuild(code: str, mutate: Any) -> str:
    raw_bytes = bytearray(base64.b32decode(code[3:]))
    mutate(raw_bytes)
    return "GK1" + base64.b32encode(bytes(raw_bytes)).decode().rstrip("=")


def _set(index: slice | int, value: Any) -> Any:
    def mutate(raw_bytes: bytearray) -> None:
        raw_bytes[index] = value

    return mutate


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda c: c[:-20], "malformed"),  # truncated signature
        (lambda c: c[:40], "malformed"),  # payload only
        (lambda c: c[:-1] + "=", "malformed"),
        (lambda c: c[:70] + "\u200b" + c[70:], "malformed"),
        (lambda c: "GK\uff11" + c[3:], "malformed"),  # full-width digit one
        (lambda c: c[:70] + "0" + c[71:], "malformed"),  # not in the base32 alphabet
        (lambda c: _rebuild(c, _set(slice(21, 85), bytes(64))), "forged"),  # zero signature
        (lambda c: _rebuild(c, _set(slice(21, 85), b"\xff" * 64)), "forged"),
        (lambda c: _rebuild(c, _set(2, 7)), "malformed"),  # kind 7
        (lambda c: _rebuild(c, _set(slice(3, 11), bytes(8))), "malformed"),  # id 0
        (lambda c: _rebuild(c, _set(slice(0, 2), b"\xff\xff")), "forged"),  # key 65535
        (lambda c: c.lower(), "unknown"),  # "gk1...": not our envelope, a plain code
    ],
)
async def test_garbled_signed_codes(node: EdgeNode, make: Any, reason: str) -> None:
    code = node.venue.codes["t"]
    bad = make(code)
    assert bad != code
    answer = await node.scan(bad)
    assert (answer["result"], answer["reason"]) == ("rejected", reason), bad
    assert "ticket" not in answer
    assert len(code) == CODE_V1_CHARS
    assert (await node.scan(code))["reason"] == "ok"


# -- replays ---------------------------------------------------------------------------


async def test_replay_with_another_code_gate_and_direction_gets_the_first_answer(
    node: EdgeNode,
) -> None:
    await node.gate("door", mode="entry_exit", dates=[10])
    code = node.venue.codes["t"]
    first = await node.scan("NOT-A-TICKET", scan_id="r-1")
    assert first["reason"] == "unknown"
    for body in (
        {"scan_id": "r-1", "code": code, "gate": "main"},
        {"scan_id": "r-1", "code": code, "gate": "door", "direction": "exit"},
        {"scan_id": "r-1", "code": "", "gate": "main", "scanned_at": 0},
    ):
        status, again = await node.call("POST", SCAN, body)
        assert (status, again) == (200, first)
        status, batch = await node.call("POST", BATCH, {"scans": [body]})
        assert (status, batch) == (200, {"results": [first]})
    # The ticket itself was never admitted by those replays.
    assert (await node.scan(code))["reason"] == "ok"
    assert await logged(node) == 2


# Was: a retry of a remembered scan_id that names a gate the node has no profile for
# was refused with 404 unknown_gate instead of getting its first answer: the gate was
# looked up before the remembered answer. POST /api/v1/scans {"scan_id": "r-1",
# "code": <code>, "gate": "main"} -> 200 ok, then the same with "gate": "nowhere" ->
# 404 {"error": "unknown_gate"} (over the WebSocket too).
@pytest.mark.parametrize("via", ["scan", "batch", "ws"])
async def test_replay_naming_an_unknown_gate_gets_the_first_answer(node: EdgeNode,
                                                                   via: str) -> None:
    code = node.venue.codes["t"]
    first = await node.scan(code, scan_id="r-1")
    assert first["reason"] == "ok"
    body = {"scan_id": "r-1", "code": code, "gate": "nowhere"}
    if via == "scan":
        assert await node.call("POST", SCAN, body) == (200, first)
    elif via == "batch":
        assert await node.call("POST", BATCH, {"scans": [body]}) == (200, {"results": [first]})
    else:
        async with await ws_connect(node) as ws:
            await ws.send_bytes(msgspec.json.encode(body))
            assert await ws_receive(ws) == first
    assert await logged(node) == 1


async def test_duplicate_scan_ids_with_different_bodies_in_one_batch(node: EdgeNode) -> None:
    code = node.venue.codes["t"]
    now = node.venue.now
    scans = [
        {"scan_id": "d", "code": "GARBAGE", "gate": "main", "scanned_at": now - 10},
        {"scan_id": "d", "code": code, "gate": "main", "scanned_at": now - 20},
        {"scan_id": "e", "code": code, "gate": "main", "scanned_at": now - 5},
        {"scan_id": "d", "code": code, "gate": "main", "direction": "exit"},
    ]
    status, body = await node.call("POST", BATCH, {"scans": scans})
    assert status == 200, body
    d = [r for r in body["results"] if r["scan_id"] == "d"]
    assert len(d) == 3 and d[0] == d[1] == d[2]
    assert await logged(node) == 2
    status, again = await node.call("POST", BATCH, {"scans": scans})
    assert (status, again) == (200, body)


async def test_batch_with_one_bad_scan_id_decides_nothing(node: EdgeNode) -> None:
    code = node.venue.codes["t"]
    scans = [{"scan_id": f"ok-{i}", "code": code, "gate": "main"} for i in range(5)]
    scans.insert(3, {"scan_id": "bad\u2028id", "code": code, "gate": "main"})
    status, body = await node.call("POST", BATCH, {"scans": scans})
    assert status == 400 and set(body) == {"error", "message"}, body
    assert await logged(node) == 0
    assert (await node.scan(code, scan_id="ok-0"))["reason"] == "ok"


async def test_same_scan_id_at_once_over_http_batch_and_ws(node: EdgeNode) -> None:
    code = node.venue.codes["t"]
    body = {"scan_id": "same", "code": code, "gate": "main"}
    async with await ws_connect(node) as ws:

        async def over_ws() -> dict[str, Any]:
            await ws.send_bytes(msgspec.json.encode(body))
            return await ws_receive(ws)

        async def over_batch() -> dict[str, Any]:
            status, answer = await node.call("POST", BATCH, {"scans": [body, body]})
            assert status == 200, answer
            assert answer["results"][0] == answer["results"][1]
            return dict(answer["results"][0])

        answers = await asyncio.gather(
            node.scan(code, scan_id="same"), over_batch(), over_ws(),
            node.scan("OTHER", scan_id="same", gate="main"), over_batch(),
        )
    assert answers[0]["reason"] == "ok"
    assert all(a == answers[0] for a in answers), answers
    assert await logged(node) == 1


async def test_quick_cancel_replay_with_another_code_gets_the_first_answer(
    edge: Any, venue: Venue
) -> None:
    stock = venue.add_ticket("stock", channel=Channel.BOX_OFFICE, sold=False)
    other = venue.add_ticket("other", channel=Channel.BOX_OFFICE, sold=False)
    node: EdgeNode = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    status, first = await node.call("POST", QC, {"scan_id": "q-1", "code": "NOPE"})
    assert status == 200 and first["reason"] == "unknown"
    for code in (stock, other, "", "x" * 4096):
        assert await node.call("POST", QC, {"scan_id": "q-1", "code": code}) == (200, first)
    # Neither stock was cancelled by the replays.
    assert (await node.scan(stock))["reason"] == "ok"
    assert (await node.scan(other))["reason"] == "ok"


# -- gates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("a%2Fb", "a/b"),
        ("%25", "%"),
        ("%FF", "%FF"),  # not UTF-8 once decoded: kept as written
        ("%C3%A9%20gate", "\u00e9 gate"),
        ("\U0001f600" * 64, "\U0001f600" * 64),
        ("%F0%9F%98%80" * 64, "\U0001f600" * 64),
        ("?x", None),  # a query string, not a name: no route
    ],
)
async def test_gate_names_in_the_path(node: EdgeNode, path: str, name: str | None) -> None:
    from yarl import URL

    url = URL(node.url + "/api/v1/gates/" + path, encoded="%" in path)
    async with node.session.put(url, json={"mode": "multi"}, headers=node.headers()) as resp:
        status, body = resp.status, await resp.json()
    if name is None:
        assert status in (404, 405) and set(body) == {"error", "message"}, body
        return
    assert status == 200, body
    assert body["gate"] == name
    _, gates = await node.call("GET", "/api/v1/gates")
    assert name in [g["gate"] for g in gates["gates"]]
    answer = await node.scan(node.venue.codes["t"], gate=name)
    assert answer["reason"] == "ok"


async def test_gate_name_over_the_limit_in_characters(node: EdgeNode) -> None:
    from yarl import URL

    url = URL(node.url + "/api/v1/gates/" + "%F0%9F%98%80" * 65, encoded=True)
    async with node.session.put(url, json={"mode": "multi"}, headers=node.headers()) as resp:
        assert_error(resp.status, resp.headers.get("Content-Type", ""), await resp.read(),
                     400)
    status, body = await node.call("POST", SCAN, {"scan_id": "g", "code": "x",
                                                  "gate": "\U0001f600" * 65})
    assert status == 400 and set(body) == {"error", "message"}
    status, body = await node.call("POST", SCAN, {"scan_id": "g", "code": "x",
                                                  "gate": "\U0001f600" * 64})
    assert status == 404 and body["error"] == "unknown_gate"
    assert await logged(node) == 0


# -- headers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("fr;q=nan, de;q=0.5", "de"),
        ("fr;q=inf", "fr"),
        ("it;q=1e999, de", "it"),
        ("de;q=-1, it;q=abc", "it"),
        ("*", "en"),
        (";;;,,,;q=", "en"),
        ("\t", "en"),
        ("f", "en"),
        ("FR", "fr"),
        ("x" * 4000 + ", de", "en"),  # only the first 256 characters are read
        ("d\u00e9", "en"),
        ("de" + ";q=0.1" * 100, "de"),
        ("fr;q=0.5, it;q=0.4", "fr"),
        ("it;q=0.1, fr;q=0.1", "it"),
    ],
)
async def test_accept_language_garbage(node: EdgeNode, header: str, lang: str) -> None:
    try:
        answer = await node.scan("UNKNOWN", headers=node.headers(**{"Accept-Language": header}))
    except ValueError:
        # aiohttp refuses to send a header it cannot encode; nothing reached the node.
        assert not header.isascii()
        return
    assert answer["reason"] == "unknown"
    assert answer["message"] == messages.message("unknown", lang)


async def test_non_utf8_header_bytes(node: EdgeNode) -> None:
    """Raw bytes that are not UTF-8 in Accept-Language and Authorization."""
    scan = scan_json("h-1", node.venue.codes["t"])
    out = await raw_http(node, b"POST /api/v1/scans HTTP/1.1\r\nHost: x\r\n" + AUTH
                         + b"Accept-Language: \xff\xfe;q=\xc3, fr\r\nContent-Length: "
                         + str(len(scan)).encode() + b"\r\nConnection: close\r\n\r\n" + scan)
    status, headers, body = split_response(out)
    assert status == 200, out
    answer = msgspec.json.decode(body)
    assert (answer["reason"], answer["message"]) == ("ok", messages.message("ok", "fr"))
    for auth in (b"Bearer \xff\xfe", b"Bearer " + TOKEN.encode() + b"\xff", b"\xc3\x28",
                 b"Bearer\t" + TOKEN.encode(), b"Bearer " + TOKEN.encode() + b"\x00"):
        out = await raw_http(node, b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n"
                             b"Authorization: " + auth + b"\r\nConnection: close\r\n\r\n")
        status, headers, body = split_response(out)
        if status == 400 and not headers.get("content-type", "").startswith(
                "application/json"):
            continue  # refused by aiohttp's HTTP parser (a NUL in a header value)
        assert_error(status, headers.get("content-type", ""), body, 401)


async def test_two_authorization_headers_first_wins(node: EdgeNode) -> None:
    for first, second, status in (("Bearer wrong", f"Bearer {TOKEN}", 401),
                                  (f"Bearer {TOKEN}", "Bearer wrong", 200)):
        out = await raw_http(node, b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n"
                             b"Authorization: " + first.encode() + b"\r\n"
                             b"Authorization: " + second.encode() + b"\r\n"
                             b"Connection: close\r\n\r\n")
        assert split_response(out)[0] == status, out


async def test_protocol_garbage_is_refused_and_the_node_keeps_serving(node: EdgeNode) -> None:
    """Requests aiohttp's HTTP parser refuses before any route runs: a 400 (plain text,
    not the API's JSON: that layer is aiohttp's), and nothing else changes."""
    for request in (
        b"GET /api/v1/gates/\xff HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n",
        b"GET /api/v1/search?q=\xff\xfeab HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n",
        b"POST /api/v1/scans HTTP/1.1\r\nHost: x\r\n" + AUTH
        + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
        b"POST /api/v1/scans HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Length: abc\r\n\r\n",
        b"POST /api/v1/scans HTTP/1.1\r\nHost: x\r\n" + AUTH
        + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"FOO /api/v1/scans HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/v1/status HTTP/9.9\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # a TLS hello
    ):
        out = await raw_http(node, request)
        assert out == b"" or 400 <= split_response(out)[0] < 500, (request[:40], out[:200])
    await assert_serving(node)
    assert await logged(node) == 1


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", SCAN, "POST"),
        ("TRACE", "/api/v1/status", "GET, HEAD"),
        ("PATCH", "/api/v1/gates/main", "PUT"),
        ("GET", "/api/v1/gates/main", "PUT"),
        ("PUT", "/api/v1/gates", "GET, HEAD"),
        ("DELETE", "/api/v1/ws", "GET"),
        ("POST", "/metrics", "GET, HEAD"),
        ("PUT", "/api/v1/search", "GET, HEAD"),
    ],
)
async def test_method_mismatch_is_405_json_with_allow(node: EdgeNode, method: str,
                                                      path: str, allow: str) -> None:
    async with node.session.request(method, node.url + path, headers=node.headers()) as resp:
        assert_error(resp.status, resp.headers.get("Content-Type", ""), await resp.read(),
                     405)
        assert resp.headers.get("Allow") == allow


async def test_a_request_target_that_is_no_path_gets_a_json_404(node: EdgeNode) -> None:
    """``OPTIONS *`` (asterisk-form) matches no ``/...`` route. Was: aiohttp's own
    plain-text 404. (``CONNECT host:port`` still gets that one: aiohttp gives it an
    empty path, which its dispatcher never offers to any route.)"""
    data = await raw_http(node, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n" + AUTH
                          + b"Connection: close\r\n\r\n")
    status, headers, body = split_response(data)
    payload = assert_error(status, headers.get("content-type", ""), body, 404)
    assert payload["error"] == "not_found" and "*" in payload["message"]
    assert await logged(node) == 0


async def test_head_requests(node: EdgeNode) -> None:
    async with node.session.head(node.url + "/api/v1/status", headers=node.headers()) as resp:
        assert resp.status == 200
    async with node.session.head(node.url + SCAN, headers=node.headers()) as resp:
        assert resp.status == 405 and resp.headers.get("Allow") == "POST"
    async with node.session.head(node.url + "/api/v1/status") as resp:
        assert resp.status == 401
    assert await logged(node) == 0


# -- search ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "q",
    [".*", "a.*", "[a-z]+", "(?i)ada", "\\d+", "%%", "_%", "\x00\x00", "*" * 100,
     "\u00e9" * 100, "ada\u0000", "\U0001f600\U0001f600", "' OR 1=1 --", "\ufffd\ufffd",
     "a\u200bda", "ada \u00a0 lovelace"],
)
async def test_search_with_regex_like_and_non_ascii_queries(edge: Any, venue: Venue,
                                                            q: str) -> None:
    venue.add_ticket("a", holder="Ada Lovelace", order="ORD-1")
    node: EdgeNode = await edge.start()
    status, body = await node.call("GET", "/api/v1/search", params={"q": q})
    assert status == 200, body
    assert body["q"] == q.strip().lower()
    expected = [venue.ids["a"]] if q == "ada \u00a0 lovelace" else []
    assert [r["id"] for r in body["results"]] == expected
    assert body["complete"] is True


async def test_search_with_undecodable_percent_escapes(node: EdgeNode) -> None:
    for query in ("q=%FF%FE", "q=%ED%A0%80%ED%A0%80", "q=a%C3", "q=ab&q=%00", "q=%zz%zz",
                  "q=ada%00lovelace", "q=%E2%80%AE%E2%80%AE"):
        status, body = await node.call("GET", "/api/v1/search?" + query)
        assert status == 200, (query, body)
        assert body["results"] == [] and body["complete"] is True


# Was: search missed a record whose holder has a non-ASCII capital that lower-cases to
# ASCII, even for the exact text stored. "İ" (U+0130) lower-cases to "i" + U+0307, so
# the ASCII pre-filter needle was b"i", which the record's raw bytes (C4 B0 for "İ") do
# not contain: holder "İpek Öz", GET /api/v1/search?q=İpek -> {"results": []}.
async def test_search_finds_the_exact_holder_text_with_a_turkish_capital_i(
    edge: Any, venue: Venue
) -> None:
    venue.add_ticket("i", holder="\u0130pek \u00d6z", order="O-2", plain="PLAIN-I")
    node: EdgeNode = await edge.start()
    for q in ("pek", "\u00f6z", "\u0130pek", "\u0130pek \u00d6z"):
        status, body = await node.call("GET", "/api/v1/search", params={"q": q})
        assert status == 200, body
        assert [r["id"] for r in body["results"]] == [venue.ids["i"]], q


# Was (found in review): the same letters in the record, searched in ASCII: holder
# "ALİ YILMAZ" was not found by q=ali, nor "Kim" written with a Kelvin sign by q=kim,
# though their lower-cased text contains the query (the byte pre-filter missed them).
async def test_search_finds_ascii_queries_in_holders_with_letters_lowering_to_ascii(
    edge: Any, venue: Venue
) -> None:
    venue.add_ticket("ali", holder="AL\u0130 YILMAZ", order="O-3", plain="PLAIN-ALI")
    venue.add_ticket("kim", holder="\u212aim Lee", order="O-4", plain="PLAIN-KIM")
    node: EdgeNode = await edge.start()
    for q, name in (("ali", "ali"), ("ali yilmaz", "ali"), ("kim", "kim"), ("KIM LEE", "kim")):
        status, body = await node.call("GET", "/api/v1/search", params={"q": q})
        assert status == 200, body
        assert [r["id"] for r in body["results"]] == [venue.ids[name]], q


# Was: the 2-100 character check of q counted the lower-cased text, which can be
# longer than what was sent: q = "İ" * 60 (60 characters) was refused with a 400.
async def test_search_length_counts_the_characters_sent(node: EdgeNode) -> None:
    status, body = await node.call("GET", "/api/v1/search", params={"q": "\u0130" * 60})
    assert status == 200, body


# -- WebSocket -------------------------------------------------------------------------


# Was: the same RecursionError over the WebSocket killed the frame's task: a text
# frame {"x": [[[...2000 levels...]]], "scan_id": "wd", "code": "x", "gate": "main"}
# (4 KiB, under the 16 KiB cap) got no answer and no error, and asyncio logged "Task
# exception was never retrieved".
async def test_ws_deeply_nested_frame_gets_an_error(node: EdgeNode) -> None:
    async with await ws_connect(node) as ws:
        await ws.send_str('{"x": ' + "[" * 2000 + "]" * 2000
                          + ', "scan_id": "wd", "code": "x", "gate": "main"}')
        try:
            reply = await ws_receive(ws)
        except TimeoutError:
            reply = {}
        await ws.send_bytes(scan_json("w-after", node.venue.codes["t"]))
        after = await ws_receive(ws)
    assert (after["scan_id"], after["reason"]) == ("w-after", "ok")
    assert reply.get("error") == "invalid", reply


async def test_ws_binary_frame_scan_and_huge_frame(node: EdgeNode) -> None:
    code = node.venue.codes["t"]
    async with await ws_connect(node) as ws:
        await ws.send_bytes(scan_json("wb-1", code))
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT_S)
        assert msg.type == aiohttp.WSMsgType.BINARY
        assert msgspec.json.decode(msg.data)["reason"] == "ok"
        await ws.send_str(scan_json("wb-2", "x" * 20_000).decode())
        msg = await asyncio.wait_for(ws.receive(), TIMEOUT_S)
        assert msg.type == aiohttp.WSMsgType.CLOSE, msg
        assert ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert await logged(node) == 1
    await assert_serving(node)


async def test_ws_without_upgrade_is_a_json_400(node: EdgeNode) -> None:
    status, ctype, body = await raw(node, "GET", WS)
    assert_error(status, ctype, body, 400)
    out = await raw_http(node, b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\n" + AUTH
                         + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n"
                         b"Connection: close\r\n\r\n")
    status, headers, body = split_response(out)
    assert_error(status, headers.get("content-type", ""), body, 400)


async def test_ws_head_with_upgrade_headers_does_not_switch_protocols(node: EdgeNode) -> None:
    """Was: 101, and the connection went over to WebSocket frames after a HEAD."""
    out = await raw_http(node, b"HEAD /api/v1/ws HTTP/1.1\r\nHost: x\r\n" + AUTH
                         + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Version: 13\r\n"
                         b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         b"Connection: close\r\n\r\n")
    status, headers, _body = split_response(out)
    assert status == 405 and headers.get("allow") == "GET", out[:300]
    await assert_serving(node)


async def test_ws_messages_after_close_are_not_decided(node: EdgeNode) -> None:
    code = node.venue.codes["t"]
    ws = await RawWS.connect(node)
    try:
        for i in range(20):
            ws.send(0x1, scan_json(f"wc-{i}", code))
        ws.send(0x8, (1000).to_bytes(2, "big"))
        for i in range(5):
            ws.send(0x1, scan_json(f"late-{i}", code))
        with contextlib.suppress(ConnectionError):
            await ws.writer.drain()
        frames = await ws.recv_until_close()
    finally:
        await ws.close()
    assert frames and frames[-1][0] == 0x8, frames
    answered = [msgspec.json.decode(p) for op, p in frames if op in (0x1, 0x2)]
    assert {a["scan_id"] for a in answered} <= {f"wc-{i}" for i in range(20)}
    assert await wait_logged(node, 20) == 20
    # Every scan sent before the close counted once; its retry gets the same answer.
    reasons = [(await node.scan(code, scan_id=f"wc-{i}"))["reason"] for i in range(20)]
    assert sorted(reasons) == ["already_used"] * 19 + ["ok"]
    for a in answered:
        assert (await node.scan(code, scan_id=a["scan_id"])) == a
    assert await logged(node) == 20
    await assert_serving(node)


async def test_ws_many_scans_then_abrupt_disconnect(node: EdgeNode) -> None:
    code = node.venue.codes["t"]
    ws = await RawWS.connect(node)
    for i in range(100):
        ws.send(0x2 if i % 2 else 0x1, scan_json(f"wa-{i}", code))
    ws.writer.write(ws_frame(0x1, scan_json("cut", code))[:7])  # half a frame
    with contextlib.suppress(ConnectionError):
        await ws.writer.drain()
    ws.abort()
    await ws.close()
    assert await wait_logged(node, 100) == 100
    reasons = [(await node.scan(code, scan_id=f"wa-{i}"))["reason"] for i in range(100)]
    assert sorted(reasons) == ["already_used"] * 99 + ["ok"]
    assert await logged(node) == 100
    await assert_serving(node)


async def test_ws_fragmented_message_is_answered(node: EdgeNode) -> None:
    body = scan_json("frag", node.venue.codes["t"])
    ws = await RawWS.connect(node)
    try:
        ws.send(0x1, body[:10], fin=False)
        ws.send(0x9, b"ping")  # a control frame between the fragments
        ws.send(0x0, body[10:20], fin=False)
        ws.send(0x0, body[20:])
        frames = [await ws.recv(), await ws.recv()]
    finally:
        await ws.close()
    assert frames[0] == (0xA, b"ping")
    op, payload = frames[1]
    assert op == 0x2
    assert msgspec.json.decode(payload)["reason"] == "ok"


@pytest.mark.parametrize(
    ("frames", "close_code"),
    [
        ([ws_frame(0x3, b"reserved")], 1002),  # reserved opcode
        ([ws_frame(0x0, b"no start")], 1002),  # continuation without a first fragment
        ([ws_frame(0x1, b'{"scan_id": "\xff"}')], 1007),  # text frame, not UTF-8
        ([ws_frame(0x9, b"p" * 200)], 1002),  # control frame over 125 bytes
        ([ws_frame(0x1, b"a", fin=False), ws_frame(0x1, b"b")], 1002),  # new msg mid-msg
    ],
    ids=["reserved-opcode", "stray-continuation", "bad-utf8-text",
         "long-ping", "interleaved"],
)
async def test_ws_protocol_errors_close_the_socket_not_the_node(
    node: EdgeNode, frames: list[bytes], close_code: int
) -> None:
    ws = await RawWS.connect(node)
    try:
        for frame in frames:
            ws.writer.write(frame)
        got = await ws.recv_until_close()
    finally:
        await ws.close()
    closes = [p for op, p in got if op == 0x8]
    assert closes, got
    assert int.from_bytes(closes[0][:2], "big") == close_code, got
    assert await logged(node) == 0
    await assert_serving(node)


# -- found by a review: WebSocket errors, gate profiles, the Bearer scheme -------------


async def test_ws_invalid_scan_error_names_its_scan_id_when_it_has_one(node: EdgeNode) -> None:
    """Was: a scan refused as invalid over the WebSocket came back without its scan_id;
    a device with several scans in flight could not tell which, and waited it out."""
    async with await ws_connect(node) as ws:
        await ws.send_str('{"scan_id": "wv-1", "code": "x", "gate": "main", '
                          '"direction": "sideways"}')
        named = await ws_receive(ws)
        await ws.send_str('{"scan_id": 7, "code": "x", "gate": "main"}')
        unnamed = await ws_receive(ws)
    assert (named["error"], named.get("scan_id")) == ("invalid", "wv-1"), named
    assert unnamed["error"] == "invalid" and "scan_id" not in unnamed, unnamed


async def test_a_gate_profile_is_stored_without_duplicates_and_within_caps(
    node: EdgeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: kept as sent; 40 gates listing one zone 262,000 times took 84 MB and made
    ``GET /api/v1/gates`` stall the loop; nothing capped the number of gates."""
    status, body = await node.call("PUT", "/api/v1/gates/bloat",
                                   {"mode": "multi", "zones": [101, 100] * 100_000})
    assert status == 200 and body["zones"] == [100, 101], body
    status, gates = await node.call("GET", "/api/v1/gates")
    assert status == 200 and len(msgspec.json.encode(gates)) < 10_000
    status, body = await node.call("PUT", "/api/v1/gates/many",
                                   {"mode": "multi", "zones": list(range(5000))})
    assert status == 422 and "at most" in body["message"], body

    monkeypatch.setattr("edge.scan.MAX_GATES", 3)  # "main" and "bloat" exist
    assert (await node.call("PUT", "/api/v1/gates/third", {"mode": "single"}))[0] == 200
    status, body = await node.call("PUT", "/api/v1/gates/fourth", {"mode": "single"})
    assert status == 422 and body["error"] == "invalid_gate", body
    assert (await node.call("PUT", "/api/v1/gates/third", {"mode": "multi"}))[0] == 200
    await assert_serving(node)


@pytest.mark.parametrize("name", ["%00", "%0A%0D", "a%09b", "%E2%80%AE"])  # last: RTL override
async def test_a_gate_name_with_control_characters_is_refused(node: EdgeNode,
                                                               name: str) -> None:
    status, ctype, body = await raw(node, "PUT", f"/api/v1/gates/{name}",
                                    data=b'{"mode": "single"}',
                                    headers=node.headers(**{"Content-Type": "application/json"}))
    assert_error(status, ctype, body, 400)


async def test_the_bearer_scheme_is_case_insensitive(node: EdgeNode) -> None:
    for scheme in ("bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} {TOKEN}"}
        assert (await node.call("GET", "/api/v1/status", headers=headers))[0] == 200
    wrong = {"Authorization": f"bearer {TOKEN}x"}
    assert (await node.call("GET", "/api/v1/status", headers=wrong))[0] == 401


async def test_malformed_requests_do_not_flood_the_log(
    node: EdgeNode, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: aiohttp logged each request its parser refused at ERROR with a traceback
    (~570 bytes): a device without any token filled the log at ~1 MB/s."""
    from edge.api import _BAD_REQUEST_LOGS

    monkeypatch.setattr(_BAD_REQUEST_LOGS, "_last", -1e9)
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    bad = (b"POST /api/v1/scans HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
           b"Content-Length: 1\r\n\r\nx")
    for _ in range(30):
        status, _headers, _body = split_response(await raw_http(node, bad))
        assert status == 400
    await assert_serving(node)
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "bad HTTP request" in record.getMessage()
    assert _BAD_REQUEST_LOGS.suppressed == 29


async def test_a_slow_body_that_keeps_arriving_is_waited_for(
    node: EdgeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline grows with the Content-Length: a device on a poor link, sending a
    batch slowly but steadily, is not refused 408 over and over (review)."""
    monkeypatch.setattr("edge.api.BODY_READ_S", 0.5)
    monkeypatch.setattr("edge.api.BODY_MIN_BYTES_PER_S", 1000)
    code = node.venue.codes["t"]
    body = msgspec.json.encode({"scans": [
        {"scan_id": f"slow-{i}", "code": code, "gate": "main"} for i in range(12)]})
    assert 1500 < len(body) < 4000
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(node))
    try:
        writer.write(b"POST /api/v1/scans/batch HTTP/1.1\r\nHost: x\r\n" + AUTH
                     + b"Content-Type: application/json\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode())
        for at in range(0, len(body), len(body) // 10 + 1):  # over ~1.5 s
            writer.write(body[at:at + len(body) // 10 + 1])
            await writer.drain()
            await asyncio.sleep(0.15)
        out = await asyncio.wait_for(reader.read(), TIMEOUT_S)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status, _headers, answer = split_response(out)
    assert status == 200, answer
    assert len(msgspec.json.decode(answer)["results"]) == 12
