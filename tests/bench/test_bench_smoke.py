"""Smoke runs of the benchmarks: they work and print figures. No timed assertions."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bench.dataset import CodeLine
from bench.report import disk_writes
from bench.scan import load_pools, scan_lines
from sync.codes import ENVELOPE_V1, KeyRing, code_digest, parse, verify
from sync.snapshot import SnapshotReader, Status

TICKETS = 200


def run_bench(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("dataset")
    snap, codes = folder / "snap.gks", folder / "codes.jsonl"
    figures = run_bench(
        "dataset", "--tickets", str(TICKETS), "--out", str(snap), "--codes", str(codes)
    )
    return snap, codes, figures


def test_dataset_snapshot_matches_codes(dataset) -> None:
    snap, codes, figures = dataset
    assert figures["tickets"] == TICKETS
    with open(snap, "rb") as fh:
        reader = SnapshotReader(fh)
        records = [r for batch in reader.batches() for r in batch]
        catalog = reader.catalog
    assert [r.id for r in records] == list(range(1, TICKETS + 1))
    keyring = KeyRing.from_raw({k.id: k.public for k in catalog.keys}, set())
    lines = [msgspec.json.decode(raw, type=CodeLine) for raw in codes.read_bytes().splitlines()]
    by_id = {r.id: r for r in records}
    in_snapshot = [line for line in lines if line.in_snapshot]
    assert len(in_snapshot) == TICKETS
    for line in in_snapshot:
        record = by_id[line.ticket]
        assert record.code_digest == code_digest(line.code)
        assert record.status == Status[line.status.upper()]
        assert (record.date, record.zone) == (line.date, line.zone)
        if line.kind == "plain":
            assert not line.code.startswith(ENVELOPE_V1)
        else:
            parsed = parse(line.code)
            assert not isinstance(parsed, int)
            assert verify(parsed, keyring)
            assert parsed.claims.id == record.id
    extra = [line for line in lines if not line.in_snapshot]
    assert extra and all(line.ticket > TICKETS for line in extra)
    for line in extra:
        parsed = parse(line.code)
        assert not isinstance(parsed, int) and verify(parsed, keyring)
    gates = json.loads((snap.parent / "gates.json").read_text())
    assert {"main", "inout", "passes"} <= set(gates)


def test_scan_bodies_are_json(dataset) -> None:
    snap, codes, _ = dataset
    gates = json.loads((snap.parent / "gates.json").read_text())
    pools = load_pools(codes, gates, seed=1)
    lines = scan_lines(pools, 300, random.Random(1))
    assert lines
    for n, line in enumerate(lines):
        body = json.loads(b'{"scan_id":"x-%d",' % n + line)
        assert body["gate"] in gates and isinstance(body["code"], str)


def test_decide_quick_prints_figures() -> None:
    figures = run_bench("decide", "--quick")
    assert figures["decisions_per_s"] > 0
    assert 0.0 <= figures["steal_cores"] <= os.cpu_count()
    assert "ok" in figures["reasons"]


def test_ab_alternates_two_node_configurations(tmp_path: Path) -> None:
    figures = run_bench(
        "ab", "--tickets", "2000", "--rate", "200", "--seconds", "1", "--pairs", "1",
        "--b=--commit-interval-ms 50", "--work", str(tmp_path),
    )
    a, b = figures["runs"]["a"][0], figures["runs"]["b"][0]
    assert a["errors"] == 0 and b["errors"] == 0
    assert a["server_cpu"] > 0 and b["server_cpu"] > 0
    # What the hypervisor took meanwhile: a share of this machine's cores.
    assert all(0.0 <= r["steal_cores"] <= os.cpu_count() for r in (a, b))
    # The generator's own lateness is reported, so a late load side can be told apart.
    assert all(r["sendlag_p99_ms"] >= 0.0 for r in (a, b))
    # Every answered scan was committed to disk first: the node's disk was written to
    # (unless the work directory has no block device: tmpfs).
    if disk_writes(tmp_path) != (0, 0):
        for r in (a, b):
            assert r["disk_write_kb_per_request"] > 0 and r["disk_writes_per_request"] > 0
    # B's node got its argument: at least 50 ms between two commits' starts.
    assert b["commits_per_s"] <= 21
    assert a["commits_per_s"] > b["commits_per_s"]
    assert set(figures["median"]) == {"a", "b"}


def test_ab_runs_side_b_from_another_checkout(tmp_path: Path) -> None:
    """``--b-tree``: B's node is the ``edge`` of that directory (a copy here, whose
    entry point adds a line to a mark at each start), A's this checkout's: one pair,
    so the copy ran exactly once."""
    repo = Path(__file__).resolve().parents[2]
    tree = tmp_path / "before"
    tree.mkdir()
    for package in ("edge", "sync"):
        shutil.copytree(repo / package, tree / package)
    main = tree / "edge" / "__main__.py"
    main.write_text(main.read_text().replace(
        "import sys\n",
        "import sys\n\nwith open('ran-here', 'a') as _mark:\n    _mark.write('started\\n')\n", 1))
    work = tmp_path / "work"
    figures = run_bench("ab", "--tickets", "2000", "--rate", "200", "--seconds", "1",
                        "--pairs", "1", "--b-tree", str(tree), "--work", str(work))
    assert figures["b_tree"] == str(tree) and figures["a_tree"] is None
    assert (tree / "ran-here").read_text() == "started\n"
    assert not (work / "ran-here").exists()
    assert figures["runs"]["b"][0]["errors"] == 0 and figures["runs"]["a"][0]["errors"] == 0


def test_ab_cold_starts_nodes_without_the_index_in_the_page_cache(tmp_path: Path) -> None:
    figures = run_bench(
        "ab", "--cold", "--tickets", "2000", "--rate", "200", "--seconds", "1", "--pairs", "1",
        "--a=--no-warm", "--work", str(tmp_path),
    )
    a, b = figures["runs"]["a"][0], figures["runs"]["b"][0]
    assert a["errors"] == 0 and b["errors"] == 0
    # A was told not to warm its index; B read all of it into the page cache.
    assert a["page_cache_warm"]["read_bytes"] == 0
    assert b["page_cache_warm"]["done"]
    assert b["page_cache_warm"]["read_bytes"] == b["page_cache_warm"]["target_bytes"] > 0


PINNING_PROBE = """
import os, sys, time
from pathlib import Path
from bench.report import pin
from bench.scan import start
logs = Path(sys.argv[1])
pin(0, 1)  # the benchmark and its load on one CPU ...
child = start("probe", [sys.executable, "-c",
                        "import os; print(sorted(os.sched_getaffinity(0)))"], logs, 0)
child.popen.wait(30)
print(sorted(os.sched_getaffinity(0)), (logs / "probe.log").read_text().strip())
"""


def test_servers_get_their_own_cpu_after_the_benchmark_pinned_itself(tmp_path: Path) -> None:
    """The servers and the load used to share one core in every benchmark run: a child's
    pin read its own affinity, inherited from the already pinned parent (one CPU)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("one CPU: nothing to pin apart")
    done = subprocess.run([sys.executable, "-c", PINNING_PROBE, str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    parent, child = done.stdout.strip().split("] ", 1)
    parent += "]"
    assert parent == f"[{allowed[1]}]"
    assert child == f"[{allowed[0]}]"


def test_service_measures_the_scan_path_with_random_scan_ids(tmp_path: Path) -> None:
    figures = run_bench(
        "service", "--tickets", "2000", "--scans", "300", "--concurrency", "8",
        "--scan-ids", "uuid", "--work", str(tmp_path),
    )
    assert figures["scan_ids"] == "uuid"
    (level,) = figures["levels"]
    assert level["concurrency"] == 8 and level["scans"] == 300
    assert level["cpu_us"] > 0 and level["scans_per_commit"] >= 1
    if disk_writes(tmp_path) != (0, 0):  # a block device: every commit was written there
        assert level["disk_write_kb"] > 0 and level["disk_writes"] > 0


def test_commit_compares_lmdb_and_the_journal_on_this_disk(tmp_path: Path) -> None:
    figures = run_bench("commit", "--scans", "1,4", "--commits", "20", "--tickets", "500",
                        "--work", str(tmp_path))
    assert [level["scans"] for level in figures["levels"]] == [1, 4]
    for level in figures["levels"]:
        for store in ("lmdb", "journal"):
            assert level[store]["cpu_us"] > 0 and level[store]["wall_ms"] > 0
    assert list(tmp_path.iterdir()) == []  # the scratch directory is gone


def test_sync_runs_a_core_and_a_node_online_and_offline(tmp_path: Path) -> None:
    figures = run_bench("sync", "--tickets", "500", "--changes", "3", "--load-rate", "200",
                        "--load-seconds", "1", "--peer", "--work", str(tmp_path))
    assert figures["changes"] == 3 and figures["bootstrap_s"] > 0
    for phase in ("online", "online_peer", "offline"):
        load = figures[phase]
        assert load["errors"] == 0, load
        assert load["reasons"] == {"ok": 200}, load  # a multi gate admits every scan
        assert load["applies_per_s"] > 0 and load["p99_ms"] > 0
    assert figures["offline"]["barriers_per_s"] == 0  # nothing but scans and cursors
