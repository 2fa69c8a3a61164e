"""Core and edge nodes as real processes on 127.0.0.1, reconciled through sync."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp
import msgspec

from bench.scan import metric_value
from sync.rules import Direction, Mode, Reason
from sync.wire import ScanItem, ScanUpload
from tests.e2e.conftest import Site
from tests.e2e.procs import VENUE, Proc, edge_proc, eventually, sell


async def test_sale_admitted_then_cancellation_refused(site: Site) -> None:
    edge = await site.add_edge("n1")
    order = await sell(site.http, site.core, site.event, quantity=2)
    first, second = order["tickets"]
    # Sold after the node's snapshot: the signature admits it at once.
    assert (await site.http.scan(edge, first["code"]))["reason"] == "ok"
    await site.http.ok("POST", f"{site.core.url}/api/v1/orders/{order['number']}/cancel",
                       {"tickets": [second["id"]]})

    async def refused() -> bool:
        answer = await site.http.scan(edge, second["code"])
        return bool(answer["reason"] == "cancelled")

    await eventually(refused, within_s=5)
    await eventually(lambda: site.synced(edge))
    ticket = await site.ticket(first["id"])
    assert ticket["entry_count"] == 1 and not ticket["conflicts"]


async def test_core_down_node_keeps_admitting_and_reconciles_once(site: Site) -> None:
    edge = await site.add_edge("n1")
    order = await sell(site.http, site.core, site.event, quantity=20)
    site.core.kill(signal.SIGKILL)
    for ticket in order["tickets"]:
        assert (await site.http.scan(edge, ticket["code"]))["reason"] == "ok"
        assert (await site.http.scan(edge, ticket["code"]))["reason"] == "already_used"
    assert (await site.status(edge))["sync"]["outbox"] >= 40
    site.core.start()
    await site.core.wait_ready(site.http.session)
    await eventually(lambda: site.synced(edge), within_s=15)
    for ticket in order["tickets"]:
        seen = await site.ticket(ticket["id"])
        assert seen["entry_count"] == 1, seen
        assert seen["scans"] == 2 and not seen["conflicts"]


async def test_admission_at_one_node_refused_at_the_other(site: Site) -> None:
    a = await site.add_edge("n1")
    b = await site.add_edge("n2")
    order = await sell(site.http, site.core, site.event)
    code = order["tickets"][0]["code"]
    assert (await site.http.scan(a, code))["reason"] == "ok"

    async def used_at_b() -> bool:
        return bool((await site.http.scan(b, code))["reason"] == "already_used")

    await eventually(used_at_b, within_s=5)


async def test_two_nodes_cut_off_admit_same_ticket_one_conflict(site: Site) -> None:
    a = await site.add_edge("n1")
    b = await site.add_edge("n2")
    order = await sell(site.http, site.core, site.event)
    ticket = order["tickets"][0]
    site.core.kill(signal.SIGKILL)
    assert (await site.http.scan(a, ticket["code"]))["reason"] == "ok"
    assert (await site.http.scan(b, ticket["code"]))["reason"] == "ok"
    site.core.start()
    await site.core.wait_ready(site.http.session)
    await eventually(lambda: site.synced(a), within_s=15)
    await eventually(lambda: site.synced(b), within_s=15)
    seen = await site.ticket(ticket["id"])
    assert seen["scans"] == 2
    assert len(seen["conflicts"]) == 1


async def test_sigkill_while_following_and_uploading(site: Site) -> None:
    edge = await site.add_edge("n1")
    order = await sell(site.http, site.core, site.event, quantity=60)
    tickets = order["tickets"]
    answered: dict[int, str] = {}

    async def scan_all() -> None:
        for t in tickets:
            try:
                answered[t["id"]] = (await site.http.scan(edge, t["code"],
                                                          scan_id=f"k{t['id']}"))["reason"]
            except aiohttp.ClientError:
                return

    async def cancel_some() -> None:
        for t in tickets[40:]:
            await site.http.ok("POST", f"{site.core.url}/api/v1/orders/{order['number']}/cancel",
                               {"tickets": [t["id"]]})

    scanning = asyncio.create_task(scan_all())
    await cancel_some()
    await eventually(lambda: asyncio.sleep(0, len(answered) >= 20), within_s=10)
    edge.kill(signal.SIGKILL)
    await scanning
    edge.start()
    await edge.wait_ready(site.http.session)
    # Retry every scan with its scan id: answered ones keep their answer.
    final: dict[int, str] = {}
    for t in tickets:
        final[t["id"]] = (await site.http.scan(edge, t["code"], scan_id=f"k{t['id']}"))["reason"]
        if t["id"] in answered:
            assert final[t["id"]] == answered[t["id"]]
    await eventually(lambda: site.synced(edge), within_s=15)
    for t in tickets:
        seen = await site.ticket(t["id"])
        assert seen["scans"] == 1, seen
        assert seen["entry_count"] == (1 if final[t["id"]] == "ok" else 0), seen
    # The feed resumed where it stopped: every cancellation is known to the node.
    for t in tickets[40:]:
        assert (await site.http.scan(edge, t["code"]))["reason"] == "cancelled"


async def test_quick_cancel_at_the_node_reaches_the_core_also_offline(site: Site) -> None:
    edge = await site.add_edge("n1")
    date, zone = site.event["dates"][0]["id"], site.event["zones"][0]["id"]
    stock = await site.http.ok("POST", site.core.url + "/api/v1/stock", {
        "date": date, "zone": zone, "rate": site.event["rates"][0]["id"], "quantity": 3,
        "channel": "box_office"})
    printed = stock["tickets"]

    async def stock_at_node() -> bool:
        status = await site.status(edge)
        return bool(status["index"]["records"] >= 3)

    await eventually(stock_at_node)
    availability = f"{site.core.url}/api/v1/dates/{date}/availability"
    before = (await site.http.ok("GET", availability))["zones"][0]["available"]
    qc = edge.url + "/api/v1/quick-cancel"
    online = await site.http.ok("POST", qc, {"scan_id": "qc1", "code": printed[0]["code"]})
    assert (online["result"], online["reason"]) == ("accepted", "ok")
    site.core.kill(signal.SIGKILL)
    offline = await site.http.ok("POST", qc, {"scan_id": "qc2", "code": printed[1]["code"]})
    assert (offline["result"], offline["reason"]) == ("accepted", "ok")
    # The same scan_id again: the same answer, counted once.
    assert await site.http.ok("POST", qc, {"scan_id": "qc2", "code": printed[1]["code"]}) == offline
    assert (await site.http.scan(edge, printed[1]["code"]))["reason"] == "cancelled"
    site.core.start()
    await site.core.wait_ready(site.http.session)
    await eventually(lambda: site.synced(edge), within_s=15)
    for ticket in printed[:2]:
        assert (await site.ticket(ticket["id"]))["status"] == "cancelled"
    assert (await site.ticket(printed[2]["id"]))["status"] == "valid"
    after = (await site.http.ok("GET", availability))["zones"][0]["available"]
    assert after == before + 2


async def test_a_quick_cancel_the_core_refuses_does_not_block_the_outbox(site: Site) -> None:
    # A quick-cancel code of 201..4096 characters is ``malformed`` at the node, but the
    # core's QuickCancelRequest takes at most 200: its 400 stopped every later upload.
    edge = await site.add_edge("n1")
    order = await sell(site.http, site.core, site.event, quantity=1)
    ticket = order["tickets"][0]
    refused = await site.http.ok("POST", edge.url + "/api/v1/quick-cancel",
                                 {"scan_id": "qc-long", "code": "X" * 300})
    assert (refused["result"], refused["reason"]) == ("rejected", "malformed")
    assert (await site.http.scan(edge, ticket["code"]))["reason"] == "ok"

    async def admitted_at_core() -> bool:
        return bool((await site.ticket(ticket["id"]))["entries"])

    await eventually(admitted_at_core, within_s=10)
    await eventually(lambda: site.synced(edge), within_s=10)


async def test_a_node_joining_late_knows_earlier_admissions(site: Site) -> None:
    """The snapshot carries records, not scan state: a node that bootstraps after a
    ticket was admitted elsewhere must still refuse it."""
    a = await site.add_edge("n1")
    order = await sell(site.http, site.core, site.event, quantity=2)
    used, fresh = order["tickets"]
    assert (await site.http.scan(a, used["code"]))["reason"] == "ok"
    await eventually(lambda: site.synced(a))
    b = await site.add_edge("n2")
    await eventually(lambda: site.synced(b))
    assert (await site.http.scan(b, used["code"]))["reason"] == "already_used"
    assert (await site.http.scan(b, fresh["code"]))["reason"] == "ok"


async def test_a_node_started_before_its_core_bootstraps_when_the_core_appears(
    site: Site,
) -> None:
    order = await sell(site.http, site.core, site.event)
    site.core.kill(signal.SIGKILL)
    edge = edge_proc(site.tmp, "n1", site.core.url, site.node_token)
    site.edges.append(edge)
    edge.start()
    await edge.wait_ready(site.http.session)
    status = await site.status(edge)
    assert status["index"]["records"] == 0 and not status["sync"]["connected"]
    assert status["sync"]["changes"]["last_error"]
    site.core.start()
    await site.core.wait_ready(site.http.session)
    await eventually(lambda: site.synced(edge), within_s=15)
    await site.http.ok("PUT", edge.url + "/api/v1/gates/main", {"mode": "single"})
    assert (await site.http.scan(edge, order["tickets"][0]["code"]))["reason"] == "ok"


async def test_a_node_following_a_core_keeps_its_log_for_the_retention(site: Site) -> None:
    edge = await site.add_edge("n1")
    status = await site.status(edge)
    # The default: acknowledged entries are kept 30 days (edge.retention).
    assert status["scans"]["retention"] == {"keep_days": 30.0, "pruned": 0}


async def _barriers(site: Site, edge: Proc) -> int:
    async with site.http.session.get(edge.url + "/metrics", headers=site.http.headers) as resp:
        text = await resp.text()
    assert "edge_journal_barriers_total " in text, text
    return metric_value(text, "edge_journal_barriers_total")


async def test_scanning_online_makes_no_barrier_and_a_kill_counts_nothing_twice(
    site: Site,
) -> None:
    """Online, the node uploads its scans and the feed brings its own admissions back:
    the cursors of both ride on the journal's applier instead of making it store at
    once while scans wait. Killed before a cursor is stored, the node sends those scans
    again at its restart, and the core still counts each once. (The applier stores
    every second here, so the kill surely comes before the last upload's cursor.)"""
    edge = await site.add_edge("n1", "--apply-interval-ms", "1000")
    order = await sell(site.http, site.core, site.event, quantity=30)

    async def has_order() -> bool:  # its records came with a feed batch: a barrier
        found = await site.http.ok("GET", f"{edge.url}/api/v1/search?q={order['number']}")
        return len(found["results"]) == 30

    await eventually(has_order)
    before = await _barriers(site, edge)
    for ticket in order["tickets"][:20]:
        assert (await site.http.scan(edge, ticket["code"]))["reason"] == "ok"
    await eventually(lambda: site.synced(edge))  # uploaded, own admissions back
    assert await _barriers(site, edge) == before
    for ticket in order["tickets"][20:]:
        assert (await site.http.scan(edge, ticket["code"]))["reason"] == "ok"
    last = order["tickets"][-1]["id"]

    async def uploaded() -> bool:
        return bool((await site.ticket(last))["scans"] == 1)

    await eventually(uploaded)
    status = await site.status(edge)
    # The core has the last scan; its seq (the log's last) is not the stored cursor yet.
    assert status["sync"]["upload_cursor"] < status["scans"]["logged"], status["sync"]
    edge.kill(signal.SIGKILL)
    edge.start()
    await edge.wait_ready(site.http.session)
    await eventually(lambda: site.synced(edge), within_s=15)
    for ticket in order["tickets"]:
        seen = await site.ticket(ticket["id"])
        assert seen["entry_count"] == 1 and seen["scans"] == 1, seen
        assert (await site.http.scan(edge, ticket["code"]))["reason"] == "already_used"


class Door:
    """Node n1 with an entry_exit gate ``door`` and one ticket; the scans of another
    node n2 reach it the real way, uploaded to the core and fed back to n1."""

    def __init__(self, site: Site, node: Proc, ticket: dict[str, Any]) -> None:
        self.site, self.node, self.ticket = site, node, ticket

    async def scan(self, direction: str, scanned_at: float | None = None) -> str:
        """A scan at n1: online, or in an offline batch taken at *scanned_at*."""
        http = self.site.http
        http.seq += 1
        body = {"scan_id": f"n1-{http.seq}", "code": self.ticket["code"], "gate": "door",
                "direction": direction}
        if scanned_at is None:
            return str((await http.ok("POST", self.node.url + "/api/v1/scans", body))["reason"])
        answer = await http.ok("POST", self.node.url + "/api/v1/scans/batch",
                               {"scans": [{**body, "scanned_at": scanned_at}]})
        return str(answer["results"][0]["reason"])

    def item(self, direction: str, scanned_at: float, logged_at: float | None = None,
             offline: bool = False) -> ScanItem:
        """A scan n2 admitted: logged when taken, unless a handheld's batch (*offline*)
        reached n2 at *logged_at*."""
        self.site.http.seq += 1
        return ScanItem(f"n2-{self.site.http.seq}", self.ticket["id"], "accepted",
                        Reason.OK if direction == "entry" else Reason.EXIT_OK,
                        Direction(direction), "door", Mode.ENTRY_EXIT,
                        self.site.event["dates"][0]["id"], scanned_at,
                        scanned_at if logged_at is None else logged_at, offline)

    async def hear(self, *items: ScanItem) -> None:
        """Upload *items* as n2's and wait until n1 has applied them."""
        site = self.site
        applied = (await site.status(self.node))["sync"]["applied_changes"]
        async with site.http.session.post(
            f"{site.core.url}/api/v1/venues/{VENUE}/scans",
            data=msgspec.json.encode(ScanUpload("n2", list(items))),
            headers={"Authorization": f"Bearer {site.node_token}",
                     "Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 200, await resp.text()

        async def heard() -> bool:
            status = await site.status(self.node)
            return bool(status["sync"]["applied_changes"] >= applied + len(items))

        await eventually(heard, within_s=10)


async def door(site: Site) -> Door:
    node = await site.add_edge("n1")
    await site.http.ok("PUT", node.url + "/api/v1/gates/door", {"mode": "entry_exit"})
    return Door(site, node, (await sell(site.http, site.core, site.event))["tickets"][0])


async def test_a_late_exit_from_another_node_does_not_put_a_holder_back_outside(
    site: Site,
) -> None:
    """Node n2 was cut off from the core: the holder went in at 19:50 and out at 19:55
    there. At 20:00 they came back in at n1. When n2's log reaches the core, n1 hears of
    that exit, older than its own entry: the holder is still inside at n1, so the same
    ticket cannot let a second person in."""
    d = await door(site)
    assert await d.scan("entry") == "ok"
    now = time.time()
    await d.hear(d.item("entry", now - 600), d.item("exit", now - 300))
    assert await d.scan("entry") == "already_inside"
    assert await d.scan("exit") == "exit_ok"
    await eventually(lambda: site.synced(d.node), within_s=10)
    assert (await site.ticket(d.ticket["id"]))["scans"] == 5


async def test_a_handhelds_offline_scan_is_as_old_as_the_handheld_says_never_newer(
    site: Site,
) -> None:
    """A handheld's offline batch reaches n2 late: n2 logged it now, but it happened
    40 minutes ago, when the holder was not yet at n1: it must not put them inside
    there now. A handheld whose clock is ahead cannot make a scan newer than when n2
    logged it either."""
    d = await door(site)
    assert await d.scan("entry") == "ok"
    assert await d.scan("exit") == "exit_ok"
    now = time.time()
    await d.hear(d.item("entry", now - 2400, logged_at=now, offline=True))
    assert await d.scan("entry") == "ok"  # outside, as at n1: the handheld's entry is old
    await d.hear(d.item("exit", time.time() + 200, logged_at=now - 400, offline=True))
    assert await d.scan("entry") == "already_inside"  # that exit is from 20 minutes ago


async def test_a_fast_handheld_at_this_node_does_not_hide_the_other_nodes_scans(
    site: Site,
) -> None:
    """n1's own offline batch from a handheld 200 s ahead: the state's time stays the
    node's, or n2's entry a moment later would count as older than it, and the holder,
    inside, could not leave through n1."""
    d = await door(site)
    assert await d.scan("entry", scanned_at=time.time() + 200) == "ok"
    assert await d.scan("exit") == "exit_ok"
    await d.hear(d.item("entry", time.time() + 5))
    assert await d.scan("exit") == "exit_ok"
