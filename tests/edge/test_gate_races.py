"""Gate profiles and the catalogue changing under them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from edge.index import encoder
from edge.model import GateProfile, Mode, ScanRequest
from edge.scan import UnknownGate
from sync.codes import Kind
from sync.snapshot import Date
from tests.edge.inprocess import put_meta, scan_service
from tests.venue import Venue


async def test_a_gate_put_while_the_catalogue_changes_sees_the_new_dates(
    tmp_path: Path, venue: Venue
) -> None:
    """The follower stores a catalogue with a new date and reloads the gates while a
    gate's profile waits for its own commit: the gate must not keep the view of the
    older catalogue (found by ``bench sync``: a ``multi`` gate refused every ticket of
    an event created a moment before as ``wrong_date``, for good)."""
    async with scan_service(tmp_path, venue) as service:
        old = service.catalog
        added = Date(40, 1, venue.now + 3600, venue.now + 14400, venue.now - 3600)
        raw = encoder.encode(msgspec.structs.replace(old, dates=[*old.dates, added]))

        async def catalogue_change() -> None:  # what ``Follower.apply`` does
            await service.committer.submit(put_meta(b"catalog", raw))
            service.reload()

        change = asyncio.ensure_future(catalogue_change())
        await asyncio.sleep(0)  # its write is submitted; the gate resolves before it lands
        await service.put_gate("late", GateProfile(Mode.MULTI))
        await change
        assert 40 in service.gates["late"].dates
        code = venue.signed(Kind.TICKET, 900_999, 1, 40, 100)  # sold after the sync
        answer = await service.scan(ScanRequest("1", code, "late"))
        assert answer.reason == "ok", answer


async def test_a_profile_that_does_not_resolve_yet_leaves_no_view_of_the_old_one(
    tmp_path: Path, venue: Venue
) -> None:
    """A gate kept before the catalogue knows its dates (``strict=False``, a node
    waiting for its first snapshot) must not go on admitting the dates of the profile
    it replaced."""
    code = venue.add_ticket("t")
    async with scan_service(tmp_path, venue) as service:
        await service.put_gate("main", GateProfile(Mode.SINGLE, dates=[999]), strict=False)
        assert "main" not in service.gates
        assert service.profiles["main"].dates == [999]
        with pytest.raises(UnknownGate):
            await service.scan(ScanRequest("1", code, "main"))
