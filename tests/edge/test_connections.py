"""Connections a device (or anyone on the venue network) holds without finishing a
request cannot pile up until the node runs out of file descriptors."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edge.importer import import_file
from tests.conftest import TOKEN, free_port
from tests.edge.test_kill9 import HEADERS, wait_ready
from tests.venue import Venue


async def test_idle_and_half_sent_connections_are_closed(
    edge: Any, venue: Venue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: aiohttp's default, an hour. Silent connections, request heads that never
    end, and keep-alive connections idle after an answer are all closed now."""
    monkeypatch.setattr("edge.app.IDLE_CLOSE_S", 0.5)
    venue.add_ticket("t")
    node = await edge.start()
    await node.gate("main", mode="single", dates=[10])
    port = int(node.url.rsplit(":", 1)[1])
    sends = [
        b"",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",  # answered, then kept alive
    ]
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in sends]
    try:
        for (_reader, writer), data in zip(streams, sends, strict=True):
            writer.write(data)
            await writer.drain()
        for (reader, _writer), data in zip(streams, sends, strict=True):
            got = await asyncio.wait_for(reader.read(), 5.0)  # EOF: the node closed it
            assert got.startswith(b"HTTP/1.1 200") if data.endswith(b"\r\n\r\n") else got == b""
    finally:
        for _reader, writer in streams:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    answer = await node.scan(node.venue.codes["t"])
    assert answer["reason"] == "ok"


def test_the_node_raises_its_open_file_limit(tmp_path: Path, venue: Venue) -> None:
    """Each device connection is a file descriptor: a node started under a low soft
    limit (1024 is common) takes the hard limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit leaves nothing to raise")
    data = tmp_path / "node"
    import_file(data, venue.write(tmp_path / "venue.snap"))
    port = free_port()
    proc = subprocess.Popen(  # the shell lowers the soft limit, then becomes the node
        ["sh", "-c", 'ulimit -Sn 256 && exec "$@"', "sh",
         sys.executable, "-m", "edge", "serve", "--data", str(data), "--port", str(port),
         "--admin-token", TOKEN, "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        async def ready() -> None:
            async with aiohttp.ClientSession(headers=HEADERS) as session:
                await wait_ready(session, f"http://127.0.0.1:{port}", proc)

        asyncio.run(ready())
        limits = Path(f"/proc/{proc.pid}/limits").read_text().splitlines()
        (line,) = [row for row in limits if row.startswith("Max open files")]
        now_soft, now_hard = line.split()[3:5]
        assert now_soft == now_hard and now_soft != "256", line
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def test_a_configured_gate_over_the_caps_does_not_stop_the_node(
    tmp_path: Path, venue: Venue
) -> None:
    """Gates given at start are stored without the catalogue's check: one over the
    caps is left out with a warning, and the node still starts (review)."""
    from edge.app import EdgeConfig, build_app, runner_for
    from edge.model import GateProfile, Mode

    data = tmp_path / "node"
    import_file(data, venue.write(tmp_path / "venue.snap"))
    gates = {"huge": GateProfile(Mode.MULTI, zones=list(range(5000))),
             "main": GateProfile(Mode.SINGLE, dates=[10])}
    runner = runner_for(build_app(EdgeConfig(data=data, admin_token=TOKEN, port=0,
                                             gates=gates)))
    await runner.setup()
    try:
        from edge.api import SERVICE

        assert set(runner.app[SERVICE].profiles) == {"main"}
    finally:
        await runner.cleanup()
