"""The writer thread runs under SCHED_BATCH by default, so that a hand-over does not
make it preempt the event loop thread on a shared core (``edge.scanlog``)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from edge.index import Index
from edge.scanlog import GroupCommitter
from tests.conftest import run_edge
from tests.venue import Venue

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux policies")


def _noop(_txn: Any, _c: GroupCommitter) -> None:
    return None


async def policy_of_writer(committer: GroupCommitter) -> int:
    await committer.submit(_noop)  # the thread is past its start
    thread = committer._thread
    assert thread is not None and thread.native_id is not None
    return os.sched_getscheduler(thread.native_id)


@pytest.mark.parametrize("batch", [True, False])
async def test_writer_thread_policy(tmp_path: Path, batch: bool) -> None:
    index = Index(tmp_path / "n")
    committer = GroupCommitter(index, asyncio.get_running_loop(), sched_batch=batch)
    committer.start()
    try:
        assert await policy_of_writer(committer) == (
            os.SCHED_BATCH if batch else os.SCHED_OTHER)
        # Only that thread: the loop thread keeps the default policy.
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
    finally:
        await committer.stop()
        index.close()


async def test_a_node_runs_its_writer_under_sched_batch(tmp_path: Path, venue: Venue) -> None:
    from edge.api import SERVICE

    async with run_edge(tmp_path / "node", venue) as node:
        assert await policy_of_writer(node.app[SERVICE].committer) == os.SCHED_BATCH
