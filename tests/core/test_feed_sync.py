"""Issue 4, core side: admissions in the feed, the head, the wake-up on uploads, the
organizer's conflicts list, and signed answers (feed, catalogue, acks, snapshot digest)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time

import msgspec

from core.api._http import NOTIFIER
from core.snapshot import SnapshotDigests
from sync.codes import (
    ACK_DOMAIN,
    FEED_DOMAIN,
    SIGNATURE_HEADER,
    SNAPSHOT_DOMAIN,
    KeyRing,
    request_domain,
    verify_feed,
)
from sync.snapshot import Catalog, SnapshotReader
from sync.wire import ChangeBatch, ScanAdmitted, ScanItem, ScanUpload
from tests.core.conftest import TOKEN, VENUE, event_body, line, order_body

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def item(sid, ticket, at, date, *, result="accepted", reason="ok", mode="single", **kw):
    return ScanItem(
        scan_id=sid,
        ticket=ticket,
        result=result,
        reason=reason,
        direction=kw.pop("direction", "entry"),
        gate=kw.pop("gate", "north"),
        mode=mode,
        date=date,
        scanned_at=at,
        logged_at=at + 0.5,
        offline=kw.pop("offline", False),
    )


async def upload(core, node, items, headers=ADMIN):
    raw = msgspec.json.encode(ScanUpload(node=node, items=items))
    async with core.session.post(
        f"{core.url}/api/v1/venues/{VENUE}/scans",
        data=raw,
        headers={**headers, "Content-Type": "application/json"},
    ) as r:
        assert r.status == 200, await r.text()
        return await r.read(), r.headers[SIGNATURE_HEADER]


async def changes(core, after=0, wait=0.0, accept="application/json"):
    """A raw changes answer: (body, signature header, decoded batch)."""
    async with core.session.get(
        f"{core.url}/api/v1/venues/{VENUE}/changes?after={after}&wait={wait}",
        headers={**ADMIN, "Accept": accept},
    ) as r:
        assert r.status == 200, await r.text()
        raw = await r.read()
        header = r.headers[SIGNATURE_HEADER]
    if accept == "application/msgpack":
        return raw, header, msgspec.msgpack.decode(raw, type=ChangeBatch)
    return raw, header, msgspec.json.decode(raw, type=ChangeBatch)


async def keyring(core) -> KeyRing:
    """The node's view: public keys from the venue's catalogue, nothing private."""
    async with core.session.get(f"{core.url}/api/v1/venues/{VENUE}/catalog", headers=ADMIN) as r:
        catalog = msgspec.json.decode(await r.read(), type=Catalog)
    return KeyRing.from_raw(
        {k.id: k.public for k in catalog.keys}, {k.id for k in catalog.keys if k.revoked}
    )


async def sold(core, event, quantity=1):
    order = await core.ok("POST", "/api/v1/orders", order_body([line(event, quantity)]))
    return [t["id"] for t in order["tickets"]], event["dates"][0]["id"]


async def test_accepted_new_scans_enter_the_feed_in_order(core, event):
    (ticket, other), date = await sold(core, event, 2)
    _raw, _sig, before = await changes(core)
    head = before.cursor
    assert before.head == head > 0

    await upload(
        core,
        "node-a",
        [
            item("a-1", ticket, 100.0, date),
            item("a-2", other, 101.0, date, result="rejected", reason="wrong_zone"),
            item("a-3", 0, 102.0, 0, result="rejected", reason="unknown"),
        ],
    )
    order = await _order_of(core, other)
    await core.ok("POST", f"/api/v1/orders/{order}/cancel", {"tickets": [other]})
    await upload(
        core,
        "node-b",
        [
            item("a-1", ticket, 100.0, date),  # duplicate: announced once only
            item("b-1", other, 103.0, date, direction="exit", reason="exit_ok"),
        ],
    )
    _raw, _sig, batch = await changes(core, head)
    kinds = [(type(c).__name__, getattr(c, "node", "")) for c in batch.changes]
    assert kinds == [
        ("ScanAdmitted", "node-a"),
        ("RecordChanged", ""),
        ("ScanAdmitted", "node-b"),
    ]
    first, _record, second = batch.changes
    assert isinstance(first, ScanAdmitted) and isinstance(second, ScanAdmitted)
    assert first.item == item("a-1", ticket, 100.0, date)
    assert second.item.scan_id == "b-1" and second.item.reason == "exit_ok"
    seqs = [c.seq for c in batch.changes]
    assert seqs == sorted(seqs) and seqs[0] > head
    assert batch.cursor == batch.head == seqs[-1] and not batch.more

    # Reading from the middle: head is still the venue's latest.
    _raw, _sig, tail = await changes(core, seqs[0])
    assert tail.head == seqs[-1] and [c.seq for c in tail.changes] == seqs[1:]
    _raw, _sig, empty = await changes(core, seqs[-1])
    assert (empty.cursor, empty.head, empty.changes) == (seqs[-1], seqs[-1], [])
    _raw, _sig, ahead = await changes(core, seqs[-1] + 50)
    assert ahead.head == seqs[-1] and type(ahead.changes[0]).__name__ == "Resync"


async def test_every_cursor_has_one_tag_in_batches_and_the_snapshot(core, event):
    """A batch's ``tag`` names its cursor's change; asking after that cursor gives it
    back as ``after_tag``, and the snapshot at that cursor carries it too. Every change
    has its own."""
    await sold(core, event, 2)
    _raw, _sig, first = await changes(core)
    assert first.after_tag == "" and first.tag
    tags = set()
    for cursor in range(1, first.cursor + 1):
        _raw, _sig, batch = await changes(core, cursor)
        tags.add(batch.after_tag)
        if cursor == first.cursor:
            assert batch.after_tag == batch.tag == first.tag and not batch.changes
    assert len(tags) == first.cursor and "" not in tags
    _raw, _sig, middle = await changes(core, 1)
    assert middle.tag == first.tag  # same last change, asked from elsewhere
    async with core.session.get(f"{core.url}/api/v1/venues/{VENUE}/snapshot",
                                headers=ADMIN) as r:
        header = SnapshotReader(io.BytesIO(await r.read())).header
    assert (header.cursor, header.tag) == (first.cursor, first.tag)


async def _order_of(core, ticket):
    return (await core.ok("GET", f"/api/v1/tickets/{ticket}"))["order"]


async def test_long_poll_wakes_on_an_upload(core, event):
    (ticket,), date = await sold(core, event)
    _raw, _sig, batch = await changes(core)
    notifier = core.app[NOTIFIER]
    poll = asyncio.create_task(changes(core, batch.cursor, wait=10))
    deadline = time.monotonic() + 5
    while notifier.parked == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert notifier.parked == 1 and not poll.done()
    await upload(core, "node-a", [item("a-1", ticket, 100.0, date)])
    uploaded = time.monotonic()
    _raw, _sig, woke = await poll
    # Woken by the write, not by the 1 s fallback re-read nor the 10 s deadline.
    assert time.monotonic() - uploaded < 0.5
    (change,) = woke.changes
    assert isinstance(change, ScanAdmitted) and change.item.scan_id == "a-1"


async def test_conflicts_list_for_the_organizer(core, event):
    (once, twice, inside), date = await sold(core, event, 3)
    token = (await core.ok("POST", f"/api/v1/venues/{VENUE}/tokens", {}))["token"]
    node = {"Authorization": f"Bearer {token}"}
    # Cut off from each other, both nodes admitted `twice`; `inside` entered twice
    # through entry/exit gates without an exit between.
    await upload(
        core,
        "node-a",
        [
            item("a-1", once, 100.0, date, offline=True),
            item("a-2", twice, 110.0, date, offline=True),
            item("a-3", inside, 120.0, date, mode="entry_exit", gate="east", offline=True),
        ],
        node,
    )
    await upload(
        core,
        "node-b",
        [
            item("b-1", twice, 105.0, date, gate="south", offline=True),
            item("b-2", inside, 121.0, date, mode="entry_exit", gate="west", offline=True),
            item("b-3", once, 130.0, date, result="rejected", reason="already_used"),
        ],
        node,
    )
    report = await core.ok("GET", f"/api/v1/venues/{VENUE}/conflicts")
    assert report["venue"] == VENUE and report["tickets"] == 2 and report["count"] == 2
    by_ticket = {t["ticket"]: t for t in report["conflicts"]}
    assert set(by_ticket) == {twice, inside}
    # Replayed by scanned_at across nodes: node-b's earlier scan wins, node-a's conflicts.
    (conflict,) = by_ticket[twice]["conflicts"]
    assert {k: conflict[k] for k in ("scan_id", "node", "gate", "scanned_at", "reason")} == {
        "scan_id": "a-2",
        "node": "node-a",
        "gate": "north",
        "scanned_at": 110.0,
        "reason": "already_used",
    }
    assert conflict["reason_at_node"] == "ok" and conflict["offline"] is True
    assert by_ticket[twice]["entry_count"] == 1 and by_ticket[twice]["kind"] == "ticket"
    assert by_ticket[twice]["order"] and by_ticket[twice]["status"] == "valid"
    (conflict,) = by_ticket[inside]["conflicts"]
    assert (conflict["scan_id"], conflict["node"], conflict["reason"]) == (
        "b-2",
        "node-b",
        "already_inside",
    )
    # The ticket view agrees, and no scan was dropped.
    detail = await core.ok("GET", f"/api/v1/tickets/{twice}")
    assert [c["scan_id"] for c in detail["conflicts"]] == ["a-2"]
    assert detail["scans"] == 2
    assert (await core.ok("GET", f"/api/v1/tickets/{once}"))["scans"] == 2

    status, err = await core.call("GET", f"/api/v1/venues/{VENUE}/conflicts", headers=node)
    assert (status, err["error"]) == (401, "unauthorized")
    status, err = await core.call("GET", "/api/v1/venues/Nowhere/conflicts")
    assert (status, err["error"]) == (404, "venue_not_found")


async def test_conflicts_list_replays_pass_limits(core):
    await core.ok("POST", "/api/v1/events", event_body(ndates=2))
    event = (await core.ok("GET", "/api/v1/events"))[0]
    product = await core.ok(
        "POST",
        "/api/v1/pass-products",
        {
            "name": "Duo",
            "venue": VENUE,
            "events": [{"event": event["id"]}],
            "price": "50",
            "max_entries": 1,
        },
    )
    order = await core.ok(
        "POST", "/api/v1/orders", order_body([{"pass": product["id"], "quantity": 1}])
    )
    pass_id = order["tickets"][0]["id"]
    first, second = (d["id"] for d in event["dates"])
    await upload(core, "node-a", [item("a-1", pass_id, 100.0, first, offline=True)])
    await upload(core, "node-b", [item("b-1", pass_id, 200.0, second, offline=True)])
    report = await core.ok("GET", f"/api/v1/venues/{VENUE}/conflicts")
    (entry,) = report["conflicts"]
    assert entry["ticket"] == pass_id and entry["kind"] == "pass"
    assert [(c["scan_id"], c["reason"]) for c in entry["conflicts"]] == [
        ("b-1", "entries_exhausted")
    ]


def fed(after: int) -> bytes:
    """The domain the node verifies a changes answer under, having asked for *after*."""
    return request_domain(FEED_DOMAIN, "changes", VENUE, after)


async def test_feed_answers_are_signed_with_the_issuing_key(core, event):
    (ticket,), date = await sold(core, event)
    ring = await keyring(core)
    for accept in ("application/json", "application/msgpack"):
        raw, header, batch = await changes(core, accept=accept)
        assert batch.changes
        key_id, _, signature = header.partition(":")
        assert key_id == "1" and len(signature) == 88
        assert verify_feed(raw, header, ring, domain=fed(0))
        for at in (0, len(raw) // 2, len(raw) - 1):
            tampered = bytearray(raw)
            tampered[at] ^= 0x01
            assert not verify_feed(bytes(tampered), header, ring, domain=fed(0))
        # Domain-separated: the same bytes do not verify as another kind of answer.
        assert not verify_feed(raw, header, ring, domain=ACK_DOMAIN)
    assert not verify_feed(raw, header, KeyRing(), domain=fed(0))
    assert not verify_feed(raw, "", ring, domain=fed(0))
    assert not verify_feed(raw, header, ring, domain=fed(0)[:-1]) and not verify_feed(
        raw, "1:" + "A" * 88, ring, domain=fed(0))

    async with core.session.get(f"{core.url}/api/v1/venues/{VENUE}/catalog", headers=ADMIN) as r:
        assert verify_feed(await r.read(), r.headers[SIGNATURE_HEADER], ring,
                           domain=request_domain(FEED_DOMAIN, "catalog", VENUE))
    raw, header = await upload(core, "node-a", [item("a-1", ticket, 100.0, date)])
    assert verify_feed(raw, header, ring, domain=request_domain(ACK_DOMAIN, "scans", VENUE))
    assert not verify_feed(raw, header, ring, domain=request_domain(FEED_DOMAIN, "scans", VENUE))


async def test_an_answer_verifies_only_for_the_request_it_answers(core, event):
    """A middleman who rewrites the node's ``after=0`` into ``after=1`` gets a genuine
    batch that starts past change 1: it must not verify as the answer to ``after=0``
    (the node would skip that change for good), nor for another venue or route."""
    await sold(core, event, 2)
    ring = await keyring(core)
    raw, header, batch = await changes(core, after=1)
    assert batch.changes and verify_feed(raw, header, ring, domain=fed(1))
    assert not verify_feed(raw, header, ring, domain=fed(0))
    assert not verify_feed(raw, header, ring,
                           domain=request_domain(FEED_DOMAIN, "changes", VENUE + "x", 1))
    assert not verify_feed(raw, header, ring,
                           domain=request_domain(FEED_DOMAIN, "admissions", VENUE, 1))


async def test_signatures_survive_rotation_and_drop_revoked_keys(core, event):
    await sold(core, event)
    old_ring = await keyring(core)
    _raw, _sig, batch = await changes(core)
    await core.ok("POST", "/api/v1/keys/rotate")
    # The batch announcing key 2 is signed by key 2 and by key 1, which the node knows.
    raw, header, after = await changes(core, batch.cursor)
    assert [part.split(":")[0] for part in header.split(", ")] == ["2", "1"]
    assert verify_feed(raw, header, old_ring, domain=fed(batch.cursor))
    new_ring = await keyring(core)
    assert len(new_ring) == 2 and verify_feed(raw, header, new_ring, domain=fed(batch.cursor))

    await core.ok("POST", "/api/v1/keys/1/revoke", {"reissue": False})
    raw, header, _ = await changes(core, after.cursor)
    assert header.startswith("2:") and "," not in header
    assert verify_feed(raw, header, await keyring(core), domain=fed(after.cursor))
    # A node that only trusts key 1, now revoked, verifies nothing.
    revoked = KeyRing.from_raw({1: _public(old_ring, 1)}, {1})
    assert not verify_feed(raw, header, revoked, domain=fed(after.cursor))


def _public(ring: KeyRing, key_id: int) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ring.usable(key_id)
    assert key is not None
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


async def test_snapshot_is_authenticated_by_its_signed_digest(core, event):
    await sold(core, event, 3)
    ring = await keyring(core)
    url = f"{core.url}/api/v1/venues/{VENUE}"
    downloads = []
    for _ in range(2):
        async with core.session.get(f"{url}/snapshot", headers=ADMIN) as r:
            assert r.status == 200
            downloads.append((int(r.headers["X-Gatekeeper-Cursor"]), await r.read()))
    (cursor, raw), again = downloads
    assert again == (cursor, raw), "a snapshot at one cursor is byte-for-byte the same"
    assert SnapshotReader(io.BytesIO(raw)).header.cursor == cursor

    async with core.session.get(f"{url}/snapshot-digest?cursor={cursor}", headers=ADMIN) as r:
        assert r.status == 200
        body, header = await r.read(), r.headers[SIGNATURE_HEADER]
    digest_domain = request_domain(SNAPSHOT_DOMAIN, "snapshot-digest", VENUE, cursor)
    assert verify_feed(body, header, ring, domain=digest_domain)
    assert not verify_feed(body, header, ring,
                           domain=request_domain(SNAPSHOT_DOMAIN, "snapshot-digest", VENUE, 0))
    assert not verify_feed(body, header, ring, domain=FEED_DOMAIN)
    assert msgspec.json.decode(body) == {
        "cursor": cursor,
        "sha256": hashlib.sha256(raw).hexdigest(),
    }

    status, err = await core.call("GET", f"/api/v1/venues/{VENUE}/snapshot-digest?cursor=999")
    assert (status, err["error"]) == (404, "snapshot_digest_unknown")
    status, _ = await core.call("GET", f"/api/v1/venues/{VENUE}/snapshot-digest?cursor=1.5")
    assert status == 400
    status, _ = await core.call("GET", f"/api/v1/venues/{VENUE}/snapshot-digest", headers={})
    assert status == 401


def test_snapshot_digests_are_bounded_and_age():
    digests = SnapshotDigests(capacity=2, ttl_s=60.0)
    digests.put("A", 1, "d1", now=0.0)
    digests.put("A", 2, "d2", now=1.0)
    digests.put("B", 1, "d3", now=2.0)
    assert len(digests) == 2 and digests.get("A", 1, now=2.0) is None
    assert digests.get("A", 2, now=61.0) == "d2"
    assert digests.get("A", 2, now=61.5) is None
    assert digests.get("B", 1, now=61.5) == "d3"
