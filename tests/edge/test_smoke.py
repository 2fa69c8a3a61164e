from __future__ import annotations


async def test_first_entry_then_already_used(edge, venue):
    code = venue.add_ticket("t1")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    first = await node.scan(code)
    assert first["result"] == "accepted" and first["reason"] == "ok"
    second = await node.scan(code)
    assert second["reason"] == "already_used"
