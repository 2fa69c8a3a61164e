"""One process per data directory: a second node or an import under a running node is
refused, and the lock goes with the process (also after SIGKILL)."""

from __future__ import annotations

import signal
import subprocess
import sys

import aiohttp

from edge.importer import import_file
from tests.conftest import TOKEN, free_port
from tests.edge.test_kill9 import start_node, wait_ready


def edge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True,
                          text=True, timeout=60)


async def test_second_node_and_import_refused_while_a_node_runs(tmp_path, venue):
    venue.add_ticket("t")
    snapshot = venue.write(tmp_path / "venue.snap")
    data = tmp_path / "node"
    import_file(data, snapshot)
    port = free_port()
    proc = start_node(data, port)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, f"http://127.0.0.1:{port}", proc)
        second = edge_cli("serve", "--data", str(data), "--port", str(free_port()),
                          "--admin-token", TOKEN)
        assert second.returncode == 2 and "in use" in second.stderr
        imported = edge_cli("import", "--data", str(data), str(snapshot))
        assert imported.returncode == 2 and "in use" in imported.stderr
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        again = edge_cli("import", "--data", str(data), str(snapshot))
        assert again.returncode == 0, again.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_journal_that_cannot_be_made_stops_serve_with_a_clear_message(tmp_path, venue):
    """The node cannot make its scan journal (here a directory is in the way, as a full
    or read-only disk would refuse it): exit 2 with what and where, no traceback."""
    venue.add_ticket("t")
    data = tmp_path / "node"
    import_file(data, venue.write(tmp_path / "venue.snap"))
    (data / "journal.new").mkdir()
    refused = edge_cli("serve", "--data", str(data), "--port", str(free_port()),
                       "--admin-token", TOKEN)
    assert refused.returncode == 2
    assert "serve failed" in refused.stderr and "journal.new" in refused.stderr
    assert "Traceback" not in refused.stderr
    # Nothing half-made was left in the journal's place.
    assert not (data / "journal").exists()
