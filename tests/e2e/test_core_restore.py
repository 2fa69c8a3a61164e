"""A core restored from a backup has lost the scans nodes uploaded since: a node whose
cursor is ahead of it takes a new snapshot and sends its whole scan log again, so the
core counts every admission once and reports a ticket admitted twice as a conflict."""

from __future__ import annotations

import shutil

from tests.e2e.conftest import Site
from tests.e2e.procs import eventually, sell


async def test_a_node_sends_its_scans_again_to_a_core_restored_from_a_backup(
    site: Site,
) -> None:
    http, core = site.http, site.core
    order = await sell(http, core, site.event)
    ticket = order["tickets"][0]
    n1 = await site.add_edge("n1")
    await eventually(lambda: site.synced(n1), 10)
    core.stop()
    backup = site.tmp / "core-backup"
    shutil.copytree(site.tmp / "core", backup)
    core.start()
    await core.wait_ready(http.session)
    assert (await http.scan(n1, ticket["code"]))["reason"] == "ok"
    await eventually(lambda: site.synced(n1), 10)
    assert (await site.ticket(ticket["id"]))["scans"] == 1
    # The core's disk is lost; it comes back from the backup, without that scan.
    core.stop()
    shutil.rmtree(site.tmp / "core")
    shutil.copytree(backup, site.tmp / "core")
    core.start()
    await core.wait_ready(http.session)

    async def scan_back() -> bool:
        return bool((await site.ticket(ticket["id"]))["scans"] == 1)

    await eventually(scan_back, 15)
    await eventually(lambda: site.synced(n1), 10)
    # n1 knows the ticket is used; a node that joins now learns it from the core.
    n2 = await site.add_edge("n2")
    await eventually(lambda: site.synced(n2), 10)
    assert (await http.scan(n2, ticket["code"]))["reason"] == "already_used"
    await eventually(lambda: site.synced(n2), 10)
    seen = await site.ticket(ticket["id"])
    assert seen["scans"] == 2 and seen["entry_count"] == 1 and not seen["conflicts"]
