"""The node's sync client holds every signed answer to the request it made: a validly
signed answer to another request (replayed, or another node's) is refused as forged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sync.client import CoreClient, CoreUnavailable, FeedForged
from sync.codes import ACK_DOMAIN, FEED_DOMAIN, KeyRing, sign_feed, verify_feed
from sync.rules import Direction, Mode, Reason
from sync.snapshot import Kind, Record, Status
from sync.wire import (
    Ack,
    ChangeBatch,
    QuickCancelAnswer,
    QuickCancelRequest,
    RecordChanged,
    Resync,
    ScanItem,
    ScanUpload,
    UploadResult,
)
from tests.scripted_core import answer_domain, client_of

KEY = Ed25519PrivateKey.generate()
RING = KeyRing.from_raw(
    {1: KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)}, set()
)


def verifier(body: bytes, header: str | None, domain: bytes) -> bool:
    return verify_feed(body, header or "", RING, domain=domain)


def signed(payload: object, domain: bytes) -> web.Response:
    body = msgspec.msgpack.encode(payload)
    return web.Response(body=body, headers={"X-Gatekeeper-Signature": sign_feed(
        body, 1, KEY, domain=domain)}, content_type="application/msgpack")


Answer = Callable[[web.Request], object]


@pytest.fixture
async def core() -> AsyncIterator[Callable[[Answer, bytes], CoreClient]]:
    answers: dict[str, tuple[Answer, bytes]] = {}

    async def handle(request: web.Request) -> web.Response:
        make, domain = answers["now"]
        return signed(make(request), answer_domain(request, domain))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with client_of(app) as client:

        def answering(make: Answer, domain: bytes) -> CoreClient:
            answers["now"] = (make, domain)
            return client

        yield answering


def record(ident: int) -> Record:
    return Record(ident, Kind.TICKET, Status.VALID, 1, 1, 0, b"d" * 16)


def item(scan_id: str) -> ScanItem:
    return ScanItem(scan_id, 7, "accepted", Reason.OK, Direction.ENTRY, "main", Mode.SINGLE,
                    1, 1.0, 1.0)


async def test_an_old_signed_batch_replayed_at_a_later_cursor_is_refused(core):
    old = ChangeBatch(110, [RecordChanged(105, record(5))], head=110)
    client = core(lambda _r: old, FEED_DOMAIN)
    assert (await client.changes(100, 0.0, verifier)) == old
    with pytest.raises(FeedForged):
        await client.changes(200, 0.0, verifier)


async def test_an_empty_batch_and_a_resync_still_pass(core):
    client = core(lambda r: ChangeBatch(int(r.query["after"])), FEED_DOMAIN)
    assert (await client.changes(200, 0.0, verifier)).cursor == 200
    client = core(lambda _r: ChangeBatch(50, [Resync(50, "ahead")], head=50), FEED_DOMAIN)
    assert (await client.changes(200, 0.0, verifier)).cursor == 50


async def test_acks_for_other_scans_do_not_acknowledge_these(core):
    client = core(lambda _r: UploadResult([Ack("a", "stored")]), ACK_DOMAIN)
    assert (await client.upload(ScanUpload("n1", [item("a")]), verifier)).acks[0].scan_id == "a"
    with pytest.raises(FeedForged):
        await client.upload(ScanUpload("n1", [item("b")]), verifier)
    with pytest.raises(FeedForged):  # a partial acknowledgement
        await client.upload(ScanUpload("n1", [item("a"), item("b")]), verifier)


async def test_a_quick_cancel_answer_for_another_scan_id_is_refused(core):
    client = core(lambda _r: QuickCancelAnswer("qc1", "accepted", "ok", 3), ACK_DOMAIN)
    assert (await client.quick_cancel(QuickCancelRequest("qc1", "C"), verifier)).ticket == 3
    with pytest.raises(FeedForged):
        await client.quick_cancel(QuickCancelRequest("qc2", "C"), verifier)


async def test_a_signed_batch_longer_than_one_socket_read_is_read_whole(core):
    """A catch-up after an outage, or an admissions replay, is hundreds of KB. Was: the
    client read only what the socket had buffered, the cut body failed its signature,
    and the node refused the genuine batch as forged, again on every retry."""
    holder = "x" * 40
    big = ChangeBatch(2000, [RecordChanged(i, msgspec.structs.replace(record(i), holder=holder))
                             for i in range(1, 2001)], head=2000)
    assert len(msgspec.msgpack.encode(big)) > 150_000
    client = core(lambda _r: big, FEED_DOMAIN)
    assert (await client.changes(0, 0.0, verifier)) == big


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_answer_over_the_cap_is_refused_before_it_is_all_read(
    monkeypatch: pytest.MonkeyPatch, chunked: bool
) -> None:
    """With a Content-Length over the cap, at once; streamed without one, once the bytes
    read pass it: a hostile or broken core cannot make the node buffer without end."""
    monkeypatch.setattr("sync.client.MAX_FEED_BYTES", 4096)

    async def handle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = 64 * 1024
        await response.prepare(request)
        for _ in range(16):
            await response.write(b"x" * 4096)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    async with client_of(app) as client:
        with pytest.raises(CoreUnavailable, match="too large"):
            await client.changes(0, 0.0, verifier)
