"""The writer thread runs under SCHED_BATCH by default, so that a hand-over does not
make it preempt the event loop thread on a shared core (``edge.scanlog``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
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


KEEPS_POLICY = """
import asyncio, os, sys
from pathlib import Path
from edge.index import Index
from edge.scanlog import GroupCommitter

os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # a policy other than default

async def main():
    index = Index(Path(sys.argv[1]))
    committer = GroupCommitter(index, asyncio.get_running_loop())
    committer.start()
    await committer.submit(lambda txn, c: None)
    print(os.sched_getscheduler(committer._thread.native_id))
    await committer.stop()
    index.close()

asyncio.run(main())
"""


def test_a_writer_started_under_another_policy_keeps_it(tmp_path: Path) -> None:
    """A node run under a chosen policy (chrt, a unit's CPUSchedulingPolicy) keeps it
    for its writer: SCHED_BATCH replaces only the default, and never demotes a
    real-time writer. SCHED_IDLE stands in here: it needs no privilege."""
    done = subprocess.run([sys.executable, "-c", KEEPS_POLICY, str(tmp_path / "n")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == os.SCHED_IDLE


def thread_policies(pid: int) -> list[int]:
    """The scheduling policy of every thread of *pid* (field 41 of its tasks' stat)."""
    policies = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        policies.append(int(stat[stat.rfind(")") + 2:].split()[38]))
    return policies


@pytest.mark.skipif(os.sched_getscheduler(0) != os.SCHED_OTHER,
                    reason="run under a chosen policy: the node keeps it for its writer")
@pytest.mark.parametrize(
    ("option", "batch_threads"),
    [([], 2), (["--writer-sched", "normal"], 0), (["--journal-mb", "0"], 1)],
)
async def test_serve_maps_the_writer_sched_option(
    tmp_path: Path, option: list[str], batch_threads: int
) -> None:
    """``edge serve`` as an operator runs it: by default two threads (the writer and the
    journal's applier) under SCHED_BATCH; ``--writer-sched normal`` none; without the
    journal only the writer."""
    import aiohttp

    from tests.conftest import free_port
    from tests.e2e.procs import ADMIN, Proc

    port = free_port()
    node = Proc("edge", [sys.executable, "-m", "edge", "serve", "--data", str(tmp_path / "n"),
                         "--port", str(port), "--admin-token", ADMIN, "--no-warm",
                         "--log-level", "WARNING", *option], port, tmp_path / "edge.log")
    node.start()
    try:
        async with aiohttp.ClientSession() as session:
            await node.wait_ready(session)
        assert node.proc is not None
        policies = thread_policies(node.proc.pid)
        assert policies.count(os.SCHED_BATCH) == batch_threads, policies
        assert policies.count(os.SCHED_OTHER) == len(policies) - batch_threads
    finally:
        node.stop()


async def test_the_node_threads_carry_their_names_for_the_os(
    tmp_path: Path, venue: Venue
) -> None:
    """``top -H`` and ``bench scan`` (CPU per thread) tell the writer and the applier
    from the loop by the names the threads give the OS."""
    from bench.report import thread_cpu, thread_switches
    from edge.api import SERVICE

    async with run_edge(tmp_path / "node", venue) as node:
        committer = node.app[SERVICE].committer
        await committer.submit(_noop)  # both threads are past their start
        names = {}
        for thread in (committer._thread, committer._applier):
            assert thread is not None and thread.native_id is not None
            comm = Path(f"/proc/self/task/{thread.native_id}/comm").read_text().strip()
            names[thread.name] = comm
        assert names == {"edge-writer": "edge-writer", "edge-applier": "edge-applier"}
        assert {"loop", "edge-writer", "edge-applier"} <= set(thread_cpu(os.getpid()))
        # Both threads have waited for work at least once: switches are counted per name.
        switches = thread_switches(os.getpid())
        assert switches["edge-writer"] > 0 and switches["edge-applier"] > 0
