"""``python -m edge demo``: the main job on embedded defaults.

Starts the bundled ticketing core as a child process (``python -m core serve``), has it
create a demo venue whose first show is tonight with doors open now (``python -m core
demo --tonight``), then runs this node following that core. The edge does not import
the core: they talk over HTTP, as in production. Ctrl-C stops both.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from edge.app import EdgeConfig
from edge.model import GateProfile, Mode

VENUE: Final = "Demo Hall"
READY_TIMEOUT_S: Final = 30.0


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the core exited; see {log}")
        try:
            with urllib.request.urlopen(url + "/api/v1/status", timeout=1.0):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise SystemExit(f"the core did not start within {READY_TIMEOUT_S:.0f} s; see {log}")


def _seed(core_url: str, token: str, dest: Path) -> dict[str, Any]:
    if dest.exists():
        loaded: dict[str, Any] = json.loads(dest.read_text())
        return loaded
    out = subprocess.run(
        [sys.executable, "-m", "core", "demo", "--core", core_url, f"--token={token}",
         "--venue", VENUE, "--tonight"],
        check=True, capture_output=True, text=True, timeout=60,
    )
    seeded: dict[str, Any] = json.loads(out.stdout)
    dest.write_text(json.dumps(seeded, indent=2))
    return seeded


def run_demo(data: Path, host: str, port: int, core_port: int, token: str) -> int:
    from edge.cli import exclusive, serve_blocking

    data.mkdir(parents=True, exist_ok=True)
    core_url = f"http://127.0.0.1:{core_port}"
    core_log = data / "core.log"
    with core_log.open("ab") as log_fh:
        core = subprocess.Popen(
            [sys.executable, "-m", "core", "serve", "--data", str(data / "core"),
             "--host", "127.0.0.1", "--port", str(core_port), f"--admin-token={token}"],
            stdout=log_fh, stderr=log_fh, start_new_session=True,
        )
    try:
        _wait_ready(core_url, core, core_log)
        seeded = _seed(core_url, token, data / "demo.json")
        codes = seeded.get("codes", [])
        print(f"core (back office) on {core_url}, admin token {token!r}; log in {core_log}")
        print(f"demo venue {VENUE!r}: tickets and a pass, first show tonight, doors open")
        if codes:
            print("scan one (then again, to see already_used):")
            print(f"  curl -s -H 'Authorization: Bearer {token}' -d '{{\"scan_id\": \"s1\", "
                  f"\"code\": \"{codes[0]}\", \"gate\": \"main\"}}' "
                  f"http://{host}:{port}/api/v1/scans")
        print(f"all demo codes: {data / 'demo.json'}")
        sys.stdout.flush()
        config = EdgeConfig(
            data=data / "node", admin_token=token, host=host, port=port, node_id="demo-node",
            gates={
                "main": GateProfile(Mode.SINGLE),
                "inout": GateProfile(Mode.ENTRY_EXIT),
                "passes": GateProfile(Mode.MULTI),
            },
            core=core_url, core_token=seeded["node_token"], venue=VENUE,
        )
        with exclusive(data / "node"):
            serve_blocking(config)
    finally:
        if core.poll() is None:
            os.killpg(core.pid, signal.SIGTERM)
            try:
                core.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(core.pid, signal.SIGKILL)
                core.wait()
    return 0

