"""Scan endpoint throughput and latency: the node against a bare aiohttp baseline.

``python -m bench scan --tickets N --seconds S [--connections C]``

One run does, on loopback only:

1. builds (or reuses, while its admission windows are still open) a dataset with
   ``bench.dataset`` under ``--work``;
2. ``python -m edge import`` into a fresh data directory (timed);
3. starts ``python -m edge serve`` and ``python -m bench.baseline``, both pinned to
   CPU 0, and PUTs the dataset's gate profiles;
4. loads the baseline, then the node, with ``wrk`` pinned to CPU 1 (this process too),
   keep-alive, realistic ``POST /api/v1/scans`` bodies (``bench/scan.lua``); measures
   each server's CPU use during the run (``server_cpu`` near 1.0 means the server was
   the bottleneck, not the load generator);
5. offers the baseline, then the node, half the rate the node reached, open-loop at a
   fixed rate (``bench.rate``), and reports p99 from each request's scheduled time and
   each server's CPU share at that rate (``baseline_half_rate_cpu``, ``half_rate_cpu``):
   at a fixed rate, CPU per request is what sets the queueing delay.

The scan mix: mostly first entries of valid tickets at open dates, repeats
(``already_used``), entries and exits at an entry/exit gate, passes walking through
per-event gates (pass limits), tickets refused on their record, wrong zones, garbage
and truncated codes, forged codes (tampered signature or payload, unknown key), and
validly signed codes the snapshot does not hold. Each phase gets its own first-entry
codes, so the node sees fresh tickets in every phase.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.dataset import CodeLine, write_dataset
from bench.rate import fixed_rate
from bench.report import (
    ALLOWED_CPUS,
    ForeignCpu,
    cpu_count,
    cpu_seconds,
    disk_per_request,
    disk_writes,
    emit,
    note,
    pin,
    switches_per,
    thread_cpu,
    thread_shares,
    thread_switches,
    wait_quiet,
)
from sync.codes import ENVELOPE_V1, PAYLOAD_V1, Claims, Kind, sign

LUA = Path(__file__).with_name("scan.lua")
CACHE_MAX_AGE_S = 2 * 3600.0
"""Dataset windows open at generation time stay open for about four hours."""
ADMIN_TOKEN_BYTES = 18
_WRK_RESULT = re.compile(r"^WRK_RESULT (\{.*\})\s*$", re.M)
_METRIC_COMMIT = re.compile(r'^edge_commit_duration_seconds_bucket\{le="([^"]+)"\}\s+(\d+)', re.M)
_METRIC_REASON = re.compile(r'^edge_scans_total\{[^}]*reason="([a-z_]+)"[^}]*\}\s+(\d+)', re.M)


# ---------------------------------------------------------------- scan bodies


@dataclass
class Pools:
    """Codes by role. First-entry pools are consumed so no phase reuses a ticket."""

    fresh: list[CodeLine] = field(default_factory=list)
    refused: list[CodeLine] = field(default_factory=list)
    passes: list[CodeLine] = field(default_factory=list)
    extra: list[CodeLine] = field(default_factory=list)
    signed: list[str] = field(default_factory=list)
    vip_zones: frozenset[int] = frozenset()
    events: tuple[int, ...] = (1, 2, 3, 4, 5)


def load_pools(codes: Path, gates: dict[str, Any], seed: int) -> Pools:
    """Read CODES.jsonl into shuffled pools."""
    decoder = msgspec.json.Decoder(CodeLine)
    pools = Pools(vip_zones=frozenset(gates.get("vip", {}).get("zones", ())))
    with open(codes, "rb") as fh:
        for raw in fh:
            line = decoder.decode(raw)
            if not line.in_snapshot:
                pools.extra.append(line)
            elif line.kind == "pass":
                if line.status == "valid":
                    pools.passes.append(line)
            elif line.status == "valid" and line.open:
                pools.fresh.append(line)
            else:
                pools.refused.append(line)
            if line.code.startswith(ENVELOPE_V1) and len(pools.signed) < 5000:
                pools.signed.append(line.code)
    rng = random.Random(seed)
    for pool in (pools.fresh, pools.refused, pools.passes, pools.extra):
        rng.shuffle(pool)
    return pools


EXTRA_SHARE = 0.015
"""Share of scan lines that take a validly signed code the snapshot lacks (scan_lines)."""


def top_up_extras(
    pools: Pools, info: dict[str, Any], tickets: int, seed: int, lines: int
) -> int:
    """Mint validly signed codes the snapshot does not hold (ids past the dataset's own
    extras, signed with the dataset's key) until *pools.extra* lasts *lines* scan lines
    with margin. The dataset ships at most 2,000; a run of several rounds takes more,
    and once they run out ``scan_lines`` silently drops that part of the mix."""
    from bench.dataset import build_venue, extra_codes, private_key_for

    need = int(lines * EXTRA_SHARE * 1.3) - len(pools.extra)
    if need <= 0:
        return 0
    first = tickets + int(info.get("extra_codes", 0)) + 1
    minted = extra_codes(first, need, build_venue(info["now"]), private_key_for(seed), seed + 1)
    pools.extra[:0] = minted  # taken from the end: the dataset's own go first
    return need


def garbage_code(rng: random.Random, signed: list[str]) -> str:
    """A code no reader accepts, or a plain code nobody issued."""
    pick = rng.randrange(6)
    sample = rng.choice(signed) if signed else ENVELOPE_V1 + "A" * 136
    if pick == 0:  # truncated signed code (scanner read half the QR)
        return sample[: rng.randrange(4, len(sample) - 1)]
    if pick == 1:  # wrong alphabet
        return sample[:50] + "018" + sample[53:]
    if pick == 2:  # lower-cased by a keyboard-wedge on the wrong layout
        return sample.lower()
    if pick == 3:  # line noise
        return "".join(
            rng.choice("!#%&()*+-./:;<=>?@[]^_{|}~ ") for _ in range(rng.randrange(3, 40))
        )
    if pick == 4:  # unknown envelope version
        return "GK9" + sample[3:]
    return "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(12))


def forged_code(rng: random.Random, signed: list[str], foreign: Ed25519PrivateKey) -> str:
    """A well-formed signed code whose signature does not hold."""
    pick = rng.randrange(3)
    if pick == 2 or not signed:
        ident = rng.randrange(10**9, 2 * 10**9)
        return sign(Claims(2, Kind.TICKET, ident, 1, 1, 1), foreign)  # key 2: unknown
    code = rng.choice(signed)
    # Payload chars precede the signature; avoid the last char (padding bits).
    payload_chars = len(ENVELOPE_V1) + (PAYLOAD_V1.size * 8) // 5
    if pick == 0:
        pos = rng.randrange(payload_chars + 2, len(code) - 2)
    else:
        pos = rng.randrange(len(ENVELOPE_V1) + 4, payload_chars - 1)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".replace(code[pos], "")
    return code[:pos] + rng.choice(alphabet) + code[pos + 1 :]


def _line(code: str, gate: str, direction: str | None = None) -> bytes:
    """A body without its leading ``{"scan_id":...,`` (the load generator adds it)."""
    out = b'"code":' + msgspec.json.encode(code) + b',"gate":"' + gate.encode() + b'"'
    if direction:
        out += b',"direction":"' + direction.encode() + b'"'
    return out + b"}"


Taken = list[tuple[int, str, CodeLine]]
"""(line index, pool name, code) of every code a body file took from the pools."""


def scan_lines(
    pools: Pools, count: int, rng: random.Random, taken: Taken | None = None
) -> list[bytes]:
    """About *count* scan bodies in a realistic mix and order (one device stream).

    Codes taken from the pools are recorded in *taken*, so that those of lines a run
    never sent can be given back (``give_back``).
    """
    taken = [] if taken is None else taken
    foreign = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    admitted: list[str] = []
    inside: list[str] = []
    left: list[str] = []
    pass_walk: list[tuple[str, int]] = []
    out: list[bytes] = []

    def take(name: str) -> CodeLine | None:
        pool: list[CodeLine] = getattr(pools, name)
        if not pool:
            return None
        line = pool.pop()
        taken.append((len(out), name, line))
        return line

    def fresh() -> CodeLine | None:
        while (line := take("fresh")) is not None:
            if line.zone not in pools.vip_zones:
                return line
            out.append(_line(line.code, "vip"))  # a VIP ticket at the VIP gate: ok
        return None

    for _ in range(count):
        roll = rng.random()
        if roll < 0.70:
            line = fresh()
            if line is None:  # pool exhausted: the node will answer already_used
                out.append(_line(rng.choice(admitted or pools.signed or ["NONE"]), "main"))
                continue
            out.append(_line(line.code, "main"))
            admitted.append(line.code)
        elif roll < 0.77 and admitted:
            out.append(_line(rng.choice(admitted[-5000:]), "main"))
        elif roll < 0.83:
            pick = rng.random()
            if pick < 0.45 or not inside:
                line = fresh()
                if line is not None:
                    out.append(_line(line.code, "inout", "entry"))
                    inside.append(line.code)
            elif pick < 0.80:
                code = inside.pop(rng.randrange(len(inside)))
                out.append(_line(code, "inout", rng.choice(("exit", "auto"))))
                left.append(code)
            elif pick < 0.90 and left:
                code = left.pop()
                out.append(_line(code, "inout", "auto"))  # back in
                inside.append(code)
            elif pick < 0.95:
                out.append(_line(rng.choice(inside), "inout", "entry"))  # already_inside
            else:
                line = fresh()
                if line is not None:
                    out.append(_line(line.code, "inout", "exit"))  # not_inside
        elif roll < 0.87:
            if pass_walk and rng.random() < 0.7:
                i = rng.randrange(len(pass_walk))
                code, step = pass_walk[i]
                event = pools.events[step % len(pools.events)]
                out.append(_line(code, f"event-{event}"))
                if step + 1 >= len(pools.events):
                    pass_walk.pop(i)
                else:
                    pass_walk[i] = (code, step + 1)
            elif (pass_line := take("passes")) is not None:
                code = pass_line.code
                out.append(_line(code, f"event-{pools.events[0]}"))
                pass_walk.append((code, 1))
        elif roll < 0.91 and pools.refused:
            out.append(_line(rng.choice(pools.refused).code, "main"))
        elif roll < 0.92:
            line = fresh()
            if line is not None:
                out.append(_line(line.code, "vip"))  # wrong_zone (not a VIP ticket)
        elif roll < 0.95:
            out.append(_line(garbage_code(rng, pools.signed), "main"))
        elif roll < 0.97:
            out.append(_line(forged_code(rng, pools.signed, foreign), "main"))
        elif roll < 0.985:
            if (extra := take("extra")) is not None:
                code = extra.code
                admitted.append(code)
                out.append(_line(code, "main"))
        else:
            out.append(_line(rng.choice(admitted or ["X"]), "inout", "exit"))
    return out


def write_bodies(
    base: Path, threads: int, per_thread: int, pools: Pools, rng: random.Random
) -> list[Taken]:
    """Write ``base.0 .. base.{threads-1}`` for ``scan.lua``; return what each took."""
    out: list[Taken] = []
    for t in range(threads):
        taken: Taken = []
        lines = scan_lines(pools, per_thread, rng, taken)
        Path(f"{base}.{t}").write_bytes(b"\n".join(lines) + b"\n")
        out.append(taken)
    return out


def give_back(pools: Pools, taken: Taken, sent: int) -> int:
    """Return to the pools the codes of lines at or after *sent*; return how many."""
    given = 0
    for index, name, line in reversed(taken):
        if index < sent:
            break
        getattr(pools, name).append(line)
        given += 1
    return given


def copy_pools(pools: Pools) -> Pools:
    """A copy whose lists can be consumed without touching *pools*."""
    return Pools(
        list(pools.fresh),
        pools.refused,
        list(pools.passes),
        list(pools.extra),
        pools.signed,
        pools.vip_zones,
        pools.events,
    )


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pinned_to(cpu: int | None) -> Any:
    if cpu is None:
        return None

    def preexec() -> None:
        pin(0, cpu)

    return preexec


@dataclass
class Proc:
    """A child process in its own process group, stopped with its whole group."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(5)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start(name: str, argv: list[str], logs: Path, cpu: int | None,
          cwd: Path | None = None) -> Proc:
    log = logs / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_pinned_to(cpu),
            cwd=cwd,
        )
    proc = Proc(name, popen, log)
    if cpu is not None and len(ALLOWED_CPUS) >= 2:
        wanted = {ALLOWED_CPUS[cpu % len(ALLOWED_CPUS)]}
        got = os.sched_getaffinity(popen.pid)
        if got != wanted:  # a server sharing the load's core makes every figure wrong
            proc.stop()
            raise RuntimeError(f"{name} runs on CPUs {sorted(got)}, not {sorted(wanted)}")
    return proc


def cpu_times(cpu: int) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU from /proc/stat; busy counts irq and softirq
    too, but not steal (the hypervisor ran someone else: not this server's work) nor
    guest (already counted in user)."""
    if cpu < 0:
        return 0, 0
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(v) for v in line.split()[1:]] + [0] * 10
            user, nice, system, idle, iowait, irq, softirq = values[:7]
            busy = user + nice + system + irq + softirq
            return busy, busy + idle + iowait
    return 0, 0


def memory_mb(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def http(
    method: str, url: str, token: str, body: Any = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def start_node(
    name: str, data: Path, token: str, logs: Path, cpu: int | None, extra: list[str],
    tree: Path | None = None,
) -> tuple[Proc, str]:
    """``edge serve`` on *data* at a free port on 127.0.0.1; *extra* serve arguments;
    the ``edge`` of checkout *tree* (``python -m`` imports from its working directory)
    rather than this one's, when given."""
    port = free_port()
    serve = [sys.executable, "-m", "edge", "serve", "--data", str(data), "--host", "127.0.0.1",
             # ``--opt=value``: a generated token may begin with "-".
             "--port", str(port), f"--admin-token={token}", "--log-level", "WARNING", *extra]
    return start(name, serve, logs, cpu, tree), f"http://127.0.0.1:{port}"


def put_gates(url: str, token: str, gates: dict[str, Any]) -> None:
    for name, profile in gates.items():
        status, body = http("PUT", f"{url}/api/v1/gates/{name}", token, profile)
        if status >= 300:
            raise RuntimeError(f"PUT gate {name}: {status} {body[:300]!r}")


def copy_index(source: Path, target: Path, *, cached: bool = True) -> None:
    """A compacted copy of an LMDB index, in the page cache unless not *cached* (then
    none of it is: a node after a reboot). Not ``shutil.copytree``: the imported file is
    sparse (written with writemap), and a plain copy writes the whole map, whose
    writeback then competes with the node's own fsyncs."""
    import lmdb

    target.mkdir(parents=True)
    env = lmdb.open(str(source), readonly=True, lock=False)
    try:
        env.copy(str(target), compact=True)
    finally:
        env.close()
    with open(target / "data.mdb", "rb", buffering=0) as fh:
        if not cached:
            os.fsync(fh.fileno())
            os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            return
        # LMDB copies with O_DIRECT: read the copy once, or the node's first thousands
        # of scans fault its pages in from the disk (a cold node, not the steady state).
        while fh.read(1 << 20):
            pass


def wait_ready(proc: Proc, url: str, token: str, timeout: float) -> float:
    """Seconds until ``GET url`` answers 200; raise if the process dies or time runs out."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
        try:
            status, _ = http("GET", url, token, timeout=1.0)
            if status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{proc.name} not ready after {timeout} s:\n{proc.tail()}")


def run_wrk(
    url: str,
    bodies: Path,
    token: str,
    seconds: float,
    connections: int,
    threads: int,
    pid: int,
    nonce: str,
    perf: Path | None = None,
    disk: Path | None = None,
) -> dict[str, Any]:
    """One wrk run; adds the server's CPU share (``server_cpu``) and requests/s. With
    *perf*, ``perf record -g`` samples the server meanwhile into that file; with *disk*
    (a path on the server's disk), what that disk was sent per request."""
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        url,
        "--",
        str(bodies),
        nonce,
        token,
    ]
    affinity = os.sched_getaffinity(pid)
    # One CPU: the server's "core" is also wrk's and ours; its busy share says nothing.
    server_core = next(iter(affinity)) if len(affinity) == 1 and cpu_count() >= 2 else -1
    os.sync()  # no writeback of earlier files (bodies, logs) during the phase
    written0 = disk_writes(disk) if disk is not None else None
    foreign = ForeignCpu()
    t0 = time.perf_counter()
    # The server's CPU is read over the middle of wrk's run (from 0.5 s after its start
    # to 0.5 s before its end): numerator and denominator over the same window, without
    # wrk's start (reading its bodies) and end.
    margin = 0.5 if seconds >= 2 else 0.0
    with perf_record(pid, perf), subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            time.sleep(margin)
            cpu0, core0, m0 = cpu_seconds(pid), cpu_times(server_core), time.perf_counter()
            threads0, switches0 = thread_cpu(pid), thread_switches(pid)
            time.sleep(max(0.5, max(1, round(seconds)) - 2 * margin))
            cpu1, core1, m1 = cpu_seconds(pid), cpu_times(server_core), time.perf_counter()
            threads1, switches1 = thread_cpu(pid), thread_switches(pid)
            out, err = proc.communicate(timeout=seconds + 60)
        except BaseException:
            proc.kill()  # subprocess.run did this on a timeout; Popen.communicate does not
            raise
        done = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    wall = time.perf_counter() - t0
    window = m1 - m0
    others = foreign.cores()
    stolen = foreign.stolen()
    found = _WRK_RESULT.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr}")
    result: dict[str, Any] = json.loads(found.group(1))
    duration = result["duration_us"] / 1e6
    result["per_s"] = round(result["requests"] / duration, 1) if duration else 0.0
    result.update(_disk_per_request(disk, written0, result["requests"]))
    result["server_cpu"] = round((cpu1 - cpu0) / window, 3) if window > 0 else 0.0
    result["threads_cpu"] = thread_shares(threads0, threads1, window)
    result["threads_switches"] = switches_per(
        switches0, switches1, round(result["per_s"] * window))
    result["wall_s"] = round(wall, 3)
    result["foreign_cores"] = others
    result["steal_cores"] = stolen
    # The server's whole core (when pinned), including the kernel's loopback softirq
    # work, which /proc/PID/stat does not charge to the server.
    busy = (core1[0] - core0[0]) / os.sysconf("SC_CLK_TCK")
    result["server_core_busy"] = (
        round(busy / window, 3) if window > 0 and server_core >= 0 else None
    )
    errors = result["errors"]
    result["error_count"] = sum(errors.values())
    return result


@contextlib.contextmanager
def perf_record(pid: int, out: Path | None) -> Iterator[None]:
    """Sample *pid* into *out* for the duration of the block (if *out*): with
    ``perf record -g`` (kernel and native stacks), or with py-spy when *out* ends in
    ``.pyspy`` (Python stacks of every thread, collapsed; ``py-spy`` is in the
    ``bench`` extra)."""
    if out is None:
        yield
        return
    if out.suffix == ".pyspy":
        argv = [py_spy_path(), "record", "--nonblocking", "--format", "raw", "--rate", "200",
                "--pid", str(pid), "--output", str(out)]
    else:
        argv = ["perf", "record", "-g", "-q", "-p", str(pid), "-o", str(out)]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(30)


def py_spy_path() -> str:
    """py-spy on PATH, else next to this interpreter (``.venv/bin/python -m bench``
    without an activated venv); FileNotFoundError when neither has it."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise FileNotFoundError("py-spy is not installed (pip install -e '.[bench]')")
    return found


SENDLAG_WARN_MS = 2.0
"""A fixed-rate phase whose generator was later than this (p99) measured the load side."""

STEAL_WARN_CORES = 0.05
"""Steal above this share of a core in a phase is reported as a warning."""


def profile_file(args: argparse.Namespace, run_dir: Path, name: str) -> Path | None:
    """Where to record the phase *name* (``--perf``, ``--py-spy``), or None."""
    if args.py_spy:
        return run_dir / f"{name}.pyspy"
    return run_dir / f"{name}.perf" if args.perf else None


def open_loop(
    url: str,
    pid: int,
    token: str,
    lines: list[bytes],
    rate: float,
    args: argparse.Namespace,
    nonce: str,
    perf: Path | None = None,
) -> dict[str, Any]:
    """One fixed-rate run against *url*; adds the server's CPU share (``server_cpu``)
    and the CPU other processes used meanwhile (``foreign_cores``)."""
    os.sync()  # no writeback of earlier files during the phase
    written0 = disk_writes(args.work)
    meter = ForeignCpu()
    cpu0 = cpu_seconds(pid)
    threads0, switches0 = thread_cpu(pid), thread_switches(pid)
    t0 = time.perf_counter()
    with perf_record(pid, perf):
        result = fixed_rate(
            "127.0.0.1",
            int(url.rsplit(":", 1)[1]),
            token,
            lines,
            rate,
            args.seconds,
            args.rate_connections,
            nonce,
            poisson=args.arrivals == "poisson",
        )
    took = time.perf_counter() - t0
    # Over the schedule and the drain (``elapsed_s``): not the connection set-up and
    # the generator's gc.collect before it, while the server idled.
    took = min(took, result.get("elapsed_s") or took)
    result["server_cpu"] = round((cpu_seconds(pid) - cpu0) / took, 3) if took else 0.0
    result["threads_cpu"] = thread_shares(threads0, thread_cpu(pid), took)
    result["foreign_cores"] = meter.cores()
    result["steal_cores"] = meter.stolen()
    answered = sum(result["reasons"].values())
    result["threads_switches"] = switches_per(switches0, thread_switches(pid), answered)
    result.update(_disk_per_request(args.work, written0, answered))
    return result


def _disk_per_request(
    disk: Path | None, before: tuple[int, int] | None, requests: int
) -> dict[str, float | None]:
    """What the disk holding the node's data was sent per request during a phase: KB
    and write requests (each one a virtio request and an interrupt here). LMDB copies
    every page a transaction touches, so the random keys of the state and answers dbs
    cost whole pages per scan. None for a device without block stats (tmpfs)."""
    per = disk_per_request(disk, before, requests)
    kb, writes = per if per is not None else (None, None)
    return {"disk_write_kb_per_request": kb, "disk_writes_per_request": writes}


def metrics_text(base: str, token: str) -> str:
    """The node's Prometheus text, or "" when it does not answer."""
    try:
        status, body = http("GET", base + "/metrics", token)
    except OSError:
        return ""
    return body.decode(errors="replace") if status == 200 else ""


def node_journal(base: str, token: str) -> dict[str, Any] | None:
    """The node's scan journal figures (``/status`` ``commits.journal``), or None."""
    try:
        status, body = http("GET", base + "/api/v1/status", token)
    except OSError:
        return None
    if status != 200:
        return None
    journal: dict[str, Any] | None = msgspec.json.decode(body)["commits"]["journal"]
    return journal


def metric_value(text: str, name: str) -> int:
    """An unlabelled counter or gauge of the node's Prometheus *text* (0 if absent)."""
    found = re.search(rf"^{re.escape(name)} (\d+)$", text, re.M)
    return int(found.group(1)) if found else 0


def metric_reasons(base: str, token: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for reason, value in _METRIC_REASON.findall(metrics_text(base, token)):
        out[reason] += int(value)
    return out


def metric_commits(base: str, token: str) -> dict[str, int]:
    """The node's cumulative commit-duration histogram: count per ``le`` bound (s)."""
    return {le: int(n) for le, n in _METRIC_COMMIT.findall(metrics_text(base, token))}


def commit_shares(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """Commits made between two histogram reads, and the share at or under each bound."""
    count = after.get("+Inf", 0) - before.get("+Inf", 0)
    shares = {
        f"le_{float(le) * 1000:g}ms": round((after[le] - before.get(le, 0)) / count, 4)
        for le in after
        if le != "+Inf" and count > 0
    }
    return {"count": count, **shares}


# ---------------------------------------------------------------- the run


def dataset_for(work: Path, tickets: int, seed: int) -> tuple[Path, Path, Path, dict[str, Any]]:
    """A dataset under *work*, reused while its admission windows are still open."""
    folder = work / f"dataset-{tickets}-s{seed}"
    snapshot, codes, gates = folder / "snapshot.gks", folder / "codes.jsonl", folder / "gates.json"
    marker = folder / "dataset.json"
    if marker.exists() and snapshot.exists() and codes.exists() and gates.exists():
        info: dict[str, Any] = json.loads(marker.read_text())
        if 0 <= time.time() - info["now"] < CACHE_MAX_AGE_S:
            info["cached"] = True
            return snapshot, codes, gates, info
    note(f"scan: generating a {tickets}-record dataset in {folder}")
    info = write_dataset(tickets, snapshot, codes, seed=seed)
    marker.write_text(json.dumps(info))
    info["cached"] = False
    return snapshot, codes, gates, info


def edge_available() -> bool:
    try:
        import edge.cli  # noqa: F401
    except ImportError:
        return False
    return True


def run(args: argparse.Namespace) -> dict[str, Any]:
    two_cores = cpu_count() >= 2
    if two_cores:
        pin(0, 1)  # this process and wrk on CPU 1; servers on CPU 0
    server_cpu = 0 if two_cores else None
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / f"run-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {
        "tickets": args.tickets,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "connections": args.connections,
        "wrk_threads": args.threads,
        "pinned": two_cores,
        "sync_writes": args.sync_writes,
        "commit_interval_ms": args.commit_interval_ms,
        "pace_below": args.pace_below,
        "journal_mb": args.journal_mb,
        "apply_interval_ms": args.apply_interval_ms,
    }
    if not args.sync_writes:
        figures.setdefault("warnings", []).append(
            "--no-sync-writes: the node did not fsync; a diagnostic, not a figure to report"
        )
    procs: list[Proc] = []
    rng = random.Random(args.seed)
    nonce = secrets.token_hex(4)
    token = secrets.token_urlsafe(ADMIN_TOKEN_BYTES)
    python = sys.executable
    node = args.node and edge_available()
    if args.node and not node:
        note("scan: edge.cli not found: measuring the baseline alone")
    try:
        snapshot, codes, gates_path, info = dataset_for(work, args.tickets, args.seed)
        figures["dataset_cached"] = info["cached"]
        gates: dict[str, Any] = json.loads(gates_path.read_text())
        pools = load_pools(codes, gates, args.seed)
        # Every scan line the node may get: warm-up, full rounds and half-rate rounds.
        planned = args.expect_rate * (args.warmup + 1.2 * args.seconds * args.rounds) * 1.2
        figures["extras_minted"] = top_up_extras(pools, info, args.tickets, args.seed, int(planned))
        # The baseline answers alike whatever the codes: its bodies come from a copy of
        # the pools, sized for --expect-rate. The node's are made after the baseline
        # ran, sized for the baseline's rate, and codes of lines never sent go back.
        per_thread = max(1000, int(args.seconds * args.expect_rate / args.threads))
        base_bodies, warm_bodies, full_bodies = (run_dir / n for n in ("base", "warm", "full"))
        write_bodies(base_bodies, args.threads, per_thread, copy_pools(pools), rng)

        base_port = free_port()
        baseline = start(
            "baseline",
            [python, "-m", "bench.baseline", "--port", str(base_port)],
            run_dir,
            server_cpu,
        )
        procs.append(baseline)
        base_url = f"http://127.0.0.1:{base_port}"

        node_url = ""
        node_proc: Proc | None = None
        if node:
            data = run_dir / "edge-data"
            t0 = time.perf_counter()
            imported = subprocess.run(
                [python, "-m", "edge", "import", "--data", str(data), str(snapshot)],
                capture_output=True,
                text=True,
                timeout=600,
            )
            figures["import_s"] = round(time.perf_counter() - t0, 2)
            if imported.returncode != 0:
                raise RuntimeError(f"edge import failed: {imported.stdout}{imported.stderr}")
            extra = [] if args.sync_writes else ["--no-sync-writes"]
            if args.commit_interval_ms is not None:
                extra += ["--commit-interval-ms", str(args.commit_interval_ms)]
            if args.pace_below is not None:
                extra += ["--pace-below", str(args.pace_below)]
            if args.journal_mb is not None:
                extra += ["--journal-mb", str(args.journal_mb)]
            if args.apply_interval_ms is not None:
                extra += ["--apply-interval-ms", str(args.apply_interval_ms)]
            node_proc, node_url = start_node("edge", data, token, run_dir, server_cpu, extra)
            procs.append(node_proc)
            figures["ready_s"] = round(
                wait_ready(node_proc, node_url + "/api/v1/status", token, 120.0), 3
            )
            put_gates(node_url, token, gates)

        wait_ready(baseline, base_url + "/api/v1/status", token, 30.0)

        # Rounds of baseline then node (the node sits idle during the baseline). The
        # machine is shared, and a neighbour only ever slows a phase down, so each
        # server's best round is its figure; every round is reported too.
        wrk = (args.connections, args.threads)
        figures["quiet_before_cores"] = wait_quiet(args.quiet_wait)
        bpid = baseline.popen.pid
        run_wrk(base_url, base_bodies, token, args.warmup, *wrk, bpid, nonce + "bw")
        bases: list[dict[str, Any]] = []
        fulls: list[dict[str, Any]] = []
        for rnd in range(args.rounds):
            if rnd:
                wait_quiet(args.quiet_wait)
            perf = profile_file(args, run_dir, f"baseline-{rnd}")
            bases.append(
                run_wrk(
                    base_url, base_bodies, token, args.seconds, *wrk, bpid, f"{nonce}b{rnd}",
                    perf,
                )
            )
            if node_proc is None:
                continue
            pid = node_proc.popen.pid
            rate = max(b["per_s"] for b in bases)
            if rnd == 0:
                warm_lines = max(200, int(args.warmup * rate * 1.2 / args.threads))
                taken = write_bodies(warm_bodies, args.threads, warm_lines, pools, rng)
                warm = run_wrk(node_url, warm_bodies, token, args.warmup, *wrk, pid, nonce + "nw")
                for t, sent in zip(taken, warm["sent"]):
                    give_back(pools, t, sent)
            full_lines = max(1000, int(args.seconds * rate * 1.2 / args.threads))
            taken = write_bodies(full_bodies, args.threads, full_lines, pools, rng)
            wait_quiet(args.quiet_wait)
            before = metric_reasons(node_url, token)
            perf = profile_file(args, run_dir, f"node-{rnd}")
            full = run_wrk(
                node_url, full_bodies, token, args.seconds, *wrk, pid, f"{nonce}n{rnd}", perf,
                disk=work,
            )
            full["metrics_reasons"] = dict((metric_reasons(node_url, token) - before).most_common())
            if not full["wraps"]:
                for t, sent in zip(taken, full["sent"]):
                    give_back(pools, t, sent)
            fulls.append(full)

        base = max(bases, key=lambda r: float(r["per_s"]))
        figures["baseline_per_s"] = base["per_s"]
        figures["baseline_cpu"] = base["server_cpu"]
        figures["baseline_core_busy"] = base["server_core_busy"]
        figures["baseline_switches"] = base["threads_switches"]
        figures["baseline_p99_ms"] = base["p99_ms"]
        figures["baseline_errors"] = sum(r["error_count"] for r in bases)
        figures["baseline_foreign_cores"] = base["foreign_cores"]
        figures["baseline_steal_cores"] = base["steal_cores"]
        figures["baseline_rounds"] = [r["per_s"] for r in bases]
        figures["baseline_steal_rounds"] = [r["steal_cores"] for r in bases]

        if node_proc is not None:
            pid = node_proc.popen.pid
            full = max(fulls, key=lambda r: float(r["per_s"]))
            figures["scans_per_s"] = full["per_s"]
            figures["ratio"] = round(full["per_s"] / base["per_s"], 3) if base["per_s"] else None
            figures["node_rounds"] = [r["per_s"] for r in fulls]
            figures["steal_rounds"] = [r["steal_cores"] for r in fulls]
            figures["ratio_rounds"] = [
                round(n["per_s"] / b["per_s"], 3) if b["per_s"] else None
                for n, b in zip(fulls, bases)
            ]
            # ``ratio`` pairs each server's best round, which may come from different
            # moments of a host whose speed drifts; the median of the per-round ratios
            # (each a baseline and a node phase run back to back) is the steadier one.
            paired = [r for r in figures["ratio_rounds"] if r is not None]
            figures["ratio_median"] = round(statistics.median(paired), 3) if paired else None
            figures["p50_ms"] = full["p50_ms"]
            figures["p99_ms"] = full["p99_ms"]
            figures["errors"] = sum(r["error_count"] for r in fulls)
            figures["errors_by_kind"] = full["errors"]
            figures["server_cpu"] = full["server_cpu"]
            figures["node_threads_cpu"] = full["threads_cpu"]
            figures["node_threads_switches"] = full["threads_switches"]
            figures["server_core_busy"] = full["server_core_busy"]
            figures["disk_write_kb_per_scan"] = full["disk_write_kb_per_request"]
            figures["disk_writes_per_scan"] = full["disk_writes_per_request"]
            figures["foreign_cores"] = full["foreign_cores"]
            figures["steal_cores"] = full["steal_cores"]
            figures["bodies_wrapped"] = full["wraps"]
            figures["fresh_codes_left"] = len(pools.fresh)
            total = sum(full["reasons"].values()) or 1
            figures["reasons"] = {
                k: round(v / total, 4)
                for k, v in sorted(full["reasons"].items(), key=lambda kv: -kv[1])
            }
            figures["metrics_reasons"] = full["metrics_reasons"]

            half = full["per_s"] / 2
            if args.half_rate and half > 0:
                if len(pools.fresh) < half * args.seconds:
                    figures.setdefault("warnings", []).append(
                        "too few fresh codes left for the half-rate run: raise --tickets"
                    )
                halves: list[dict[str, Any]] = []
                base_halves: list[dict[str, Any]] = []
                for rnd in range(args.rounds):
                    count = int(half * args.seconds * 1.05) + 100
                    lines = scan_lines(pools, count, rng)
                    # The baseline at the same rate, with the same bodies: the latency
                    # and CPU per request of a bare server under the same offered load.
                    wait_quiet(args.quiet_wait)
                    perf = profile_file(args, run_dir, f"baseline-half-{rnd}")
                    base_halves.append(
                        open_loop(
                            base_url, bpid, token, lines, half, args, f"{nonce}bh{rnd}", perf
                        )
                    )
                    wait_quiet(args.quiet_wait)
                    commits = metric_commits(node_url, token)
                    perf = profile_file(args, run_dir, f"node-half-{rnd}")
                    halves.append(
                        open_loop(
                            node_url, pid, token, lines, half, args, f"{nonce}h{rnd}", perf
                        )
                    )
                    halves[-1]["commits"] = commit_shares(
                        commits, metric_commits(node_url, token)
                    )
                base_half = min(base_halves, key=lambda r: float(r["p99_ms"]))
                figures["baseline_p50_half_rate_ms"] = base_half["p50_ms"]
                figures["baseline_p99_half_rate_ms"] = base_half["p99_ms"]
                figures["baseline_half_rate_cpu"] = base_half["server_cpu"]
                figures["baseline_service_p99_half_rate_ms"] = base_half["service_p99_ms"]
                figures["baseline_half_rate_steal_rounds"] = [r["steal_cores"] for r in base_halves]
                # The load generator's own lateness (send - scheduled): latency it adds
                # to both servers' figures; over ~2 ms the phase measured the load side.
                figures["half_rate_sendlag_p99_ms"] = [
                    (b.get("sendlag_p99_ms"), n.get("sendlag_p99_ms"))
                    for b, n in zip(base_halves, halves)
                ]
                result = min(halves, key=lambda r: float(r["p99_ms"]))
                figures["half_rate_cpu"] = result["server_cpu"]
                figures["half_rate_threads_cpu"] = result["threads_cpu"]
                figures["half_rate_threads_switches"] = result["threads_switches"]
                # How long the node's group commits (write + fsync) took meanwhile.
                figures["half_rate_commits"] = result["commits"]
                figures["half_rate_foreign_cores"] = result["foreign_cores"]
                figures["half_rate_steal_cores"] = result["steal_cores"]
                figures["half_rate_steal_rounds"] = [r["steal_cores"] for r in halves]
                figures["half_rate_per_s"] = result["achieved_per_s"]
                figures["half_rate_disk_write_kb_per_scan"] = result["disk_write_kb_per_request"]
                figures["half_rate_disk_writes_per_scan"] = result["disk_writes_per_request"]
                figures["p50_half_rate_ms"] = result["p50_ms"]
                figures["p99_half_rate_ms"] = result["p99_ms"]
                figures["p999_half_rate_ms"] = result["p999_ms"]
                figures["service_p99_half_rate_ms"] = result["service_p99_ms"]
                figures["half_rate_p99_rounds"] = [r["p99_ms"] for r in halves]
                figures["p99_half_rate_median_ms"] = round(
                    statistics.median(r["p99_ms"] for r in halves), 3
                )
                figures["half_rate_errors"] = sum(r["errors"] for r in halves)
                figures["half_rate_reasons"] = result["reasons"]
            # Did the applier keep up (``unapplied_scans`` near 0, no failures)?
            figures["node_journal"] = node_journal(node_url, token)
            mem = memory_mb(pid)
            figures["node_rss_mb"] = mem.get("VmRSS")
            figures["node_rss_anon_mb"] = mem.get("RssAnon")
            if node_proc.popen.poll() is not None:
                raise RuntimeError(f"edge node died during the run:\n{node_proc.tail()}")
        else:
            figures["scans_per_s"] = None
            figures["note"] = "no edge node: baseline only"
    finally:
        for proc in reversed(procs):
            proc.stop()
        if not (args.keep or args.perf or args.py_spy):
            shutil.rmtree(run_dir, ignore_errors=True)
    # Saturation: the pinned core's busy share when known (it includes kernel work on
    # the server's behalf: loopback softirq, fsync), else the process's own CPU share.
    for label in ("baseline_foreign_cores", "foreign_cores", "half_rate_foreign_cores"):
        if (figures.get(label) or 0.0) > 0.1:
            figures.setdefault("warnings", []).append(
                f"{label}={figures[label]}: other processes shared the machine"
            )
    late = [lag for pair in figures.get("half_rate_sendlag_p99_ms", []) for lag in pair
            if lag is not None and lag > SENDLAG_WARN_MS]
    if late:
        figures.setdefault("warnings", []).append(
            f"half_rate_sendlag_p99_ms={figures['half_rate_sendlag_p99_ms']}: the load "
            "generator sent late; half-rate latencies include its lateness"
        )
    for label in ("baseline_steal_rounds", "steal_rounds", "half_rate_steal_rounds"):
        if max(figures.get(label) or [0.0]) > STEAL_WARN_CORES:
            figures.setdefault("warnings", []).append(
                f"{label}={figures[label]}: the hypervisor took CPU time from this machine"
            )
    for label, busy, own in (
        ("node", figures.get("server_core_busy"), figures.get("server_cpu")),
        ("baseline", figures.get("baseline_core_busy"), figures.get("baseline_cpu")),
    ):
        share = busy if busy is not None else own
        if share is not None and share < 0.9:
            figures.setdefault("warnings", []).append(
                f"{label} core {share:.2f} busy: the load generator may be the bottleneck"
                + (", or every connection waited on the node's commits (its disk)"
                   if label == "node" else "")
            )
    return figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tickets", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measured phase")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds, per server")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--work", type=Path, default=Path("bench-data"), help="datasets and run files"
    )
    parser.add_argument(
        "--expect-rate",
        type=float,
        default=15_000,
        help="scans/s to prepare distinct bodies for (more are rotated)",
    )
    parser.add_argument(
        "--rate-connections",
        type=int,
        default=256,
        help="connection pool of the half-rate run (devices with one scan in flight)",
    )
    parser.add_argument(
        "--arrivals",
        choices=("even", "poisson"),
        default="even",
        help="fixed-rate sends evenly spaced (default), or Poisson arrivals (many "
        "independent devices: random clusters)",
    )
    parser.add_argument("--no-half-rate", dest="half_rate", action="store_false")
    parser.add_argument("--no-node", dest="node", action="store_false", help="baseline only")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument(
        "--commit-interval-ms",
        type=float,
        default=None,
        help="the node's least time between group commits (default: the node's own)",
    )
    parser.add_argument(
        "--pace-below",
        type=int,
        default=None,
        help="the node's --pace-below (default: the node's own)",
    )
    parser.add_argument(
        "--journal-mb",
        type=float,
        default=None,
        help="the node's --journal-mb (default: the node's own; 0: no journal)",
    )
    parser.add_argument(
        "--apply-interval-ms",
        type=float,
        default=None,
        help="the node's --apply-interval-ms (default: the node's own)",
    )
    parser.add_argument(
        "--no-sync-writes",
        dest="sync_writes",
        action="store_false",
        help="run the node without fsync (a diagnostic: it shows what the disk's flushes "
        "cost; such a node is not durable, so its figures never count against a target)",
    )
    parser.add_argument(
        "--perf",
        action="store_true",
        help="record each measured phase (full load and half rate) with `perf record -g` "
        "into the run directory "
        "(implies --keep; perf adds load, so figures of such a run are not comparable)",
    )
    parser.add_argument(
        "--py-spy",
        dest="py_spy",
        action="store_true",
        help="like --perf, with py-spy: Python stacks of every thread of each server, "
        "collapsed, into NAME.pyspy files of the run directory",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="baseline+node rounds; the best of each counts"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="seconds to wait, before each phase, for other processes to go quiet",
    )


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    if args.perf and shutil.which("perf") is None:
        raise SystemExit("perf is not installed")
    if args.py_spy:
        try:
            py_spy_path()
        except FileNotFoundError as exc:
            raise SystemExit(str(exc)) from None
    # SIGTERM unwinds like Ctrl-C, so the servers started here are stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    figures = run(args)
    if figures.get("scans_per_s"):
        print(
            f"scan: node {figures['scans_per_s']:,.0f}/s, baseline "
            f"{figures['baseline_per_s']:,.0f}/s (ratio {figures['ratio']}, median of "
            f"rounds {figures.get('ratio_median')}), p99 {figures['p99_ms']} ms, p99 at half "
            f"rate {figures.get('p99_half_rate_ms')} ms (median of rounds "
            f"{figures.get('p99_half_rate_median_ms')}; baseline "
            f"{figures.get('baseline_p99_half_rate_ms')} ms)"
        )
    emit(figures)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.scan", description=__doc__)
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
