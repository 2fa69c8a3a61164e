"""Shared helpers of the benchmarks: percentiles, CPU pinning, the closing JSON line."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(pct / 100.0 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def _allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


ALLOWED_CPUS: Final = _allowed_cpus()
"""The CPUs this benchmark may use, read when it starts, before it pins itself. Not read
again in ``pin``: a child started by a pinned benchmark inherits its one CPU, and
reading its own affinity there made every server stay on the load's CPU (the servers
and the load generator shared one core in every run before this was found)."""


def cpu_count() -> int:
    """CPUs this benchmark may run on (whatever it has pinned itself to since)."""
    return len(ALLOWED_CPUS)


def pin(pid: int, cpu: int) -> bool:
    """Pin *pid* (0 = this process) to one of ``ALLOWED_CPUS`` when there are two or
    more. Also right in a child's ``preexec_fn``, after the parent pinned itself."""
    if len(ALLOWED_CPUS) < 2:
        return False
    os.sched_setaffinity(pid, {ALLOWED_CPUS[cpu % len(ALLOWED_CPUS)]})
    return True


def emit(figures: dict[str, Any]) -> None:
    """Print the benchmark's figures as one JSON object on the last line of stdout."""
    sys.stdout.flush()
    sys.stdout.write(msgspec.json.encode(figures).decode() + "\n")
    sys.stdout.flush()


def note(text: str) -> None:
    """A progress line for humans (stderr, so stdout's last line stays the figures)."""
    print(text, file=sys.stderr, flush=True)


def _stat(path: Path) -> tuple[str, list[str]] | None:
    """(command name, the fields after it) of a ``/proc/.../stat`` file; None once the
    process or thread is gone. Field 11 is user time, 12 system time (in ticks)."""
    try:
        raw = path.read_text()
    except OSError:
        return None
    return raw[raw.find("(") + 1 : raw.rfind(")")], raw[raw.rfind(")") + 2 :].split()


def _cpu(fields: list[str]) -> float:
    """User + system seconds of ``_stat`` fields."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of *pid* and its live descendants, in seconds."""
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or (found := _stat(entry / "stat")) is None:
            continue
        fields = found[1]
        p = int(entry.name)
        children.setdefault(int(fields[1]), []).append(p)
        stats[p] = _cpu(fields)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo.extend(children.get(p, ()))
    return total


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each thread of *pid*, by name: ``loop`` for its main
    thread, the node's own names for the threads that set them (``edge-writer``,
    ``edge-applier``), ``other`` for the rest. Threads that have ended are not counted."""
    out: dict[str, float] = {}
    for tid in _tasks(pid):
        if (found := _stat(Path(f"/proc/{pid}/task/{tid}/stat"))) is None:
            continue
        name, fields = found
        key = _thread_key(pid, tid, name)
        out[key] = out.get(key, 0.0) + _cpu(fields)
    return out


def _tasks(pid: int) -> list[str]:
    """Thread ids of *pid*; none once it is gone."""
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def _thread_key(pid: int, tid: str, name: str) -> str:
    return "loop" if int(tid) == pid else name if name.startswith("edge-") else "other"


def thread_switches(pid: int) -> dict[str, int]:
    """Context switches so far (voluntary: the thread waited, for I/O, a lock or the
    GIL; involuntary: it was preempted) of each thread of *pid*, keyed as ``thread_cpu``.
    Each costs the core a few microseconds on a VM."""
    out: dict[str, int] = {}
    for tid in _tasks(pid):
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        key = _thread_key(pid, tid, fields.get("Name", "").strip())
        switches = sum(int(fields.get(k, "0")) for k in
                       ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
        out[key] = out.get(key, 0) + switches
    return out


def switches_per(before: dict[str, int], after: dict[str, int],
                 count: int) -> dict[str, float]:
    """Each thread's context switches per request between two ``thread_switches``."""
    if count <= 0:
        return {}
    return {k: round((v - before.get(k, 0)) / count, 3) for k, v in sorted(after.items())}


def thread_shares(before: dict[str, float], after: dict[str, float],
                  seconds: float) -> dict[str, float]:
    """Each thread's share of a core between two ``thread_cpu`` reads."""
    if seconds <= 0:
        return {}
    return {k: round((v - before.get(k, 0.0)) / seconds, 3) for k, v in sorted(after.items())}


def disk_writes(path: Path) -> tuple[int, int]:
    """(bytes, requests) written so far by the block device that holds *path*, from
    ``/sys/dev/block/MAJ:MIN/stat``; (0, 0) when it has none (tmpfs). What the disk was
    really sent: ``/proc/PID/io``'s ``write_bytes`` counts whole page-cache folios as
    they get dirty, ~16x the bytes an LMDB commit writes on this kernel."""
    try:
        dev = os.stat(path).st_dev
        fields = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat").read_text()
        values = fields.split()
        return int(values[6]) * 512, int(values[4])
    except (OSError, ValueError, IndexError):
        return 0, 0


def disk_per_request(
    path: Path | None, before: tuple[int, int] | None, requests: int
) -> tuple[float, float] | None:
    """(KB, write requests) per request that the disk holding *path* was sent since
    *before* (``disk_writes``); None without block stats (tmpfs) or requests."""
    after = disk_writes(path) if path is not None else (0, 0)
    if before is None or not requests or after == (0, 0):
        return None
    return (round((after[0] - before[0]) / requests / 1024, 2),
            round((after[1] - before[1]) / requests, 2))


def _own_cpu_seconds() -> float:
    """CPU time of this process, its live descendants and its reaped children."""
    found = _stat(Path("/proc/self/stat"))
    assert found is not None  # this process
    fields = found[1]
    reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return cpu_seconds(os.getpid()) + reaped


def _all_cpus() -> list[int]:
    """The ``cpu`` line of /proc/stat: jiffies of every CPU by kind."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def _busy_seconds() -> float:
    """User + nice + system time of every CPU, from /proc/stat (no irq, no softirq)."""
    values = _all_cpus()
    return (values[0] + values[1] + values[2]) / os.sysconf("SC_CLK_TCK")


def _steal_seconds() -> float:
    """Time the hypervisor ran something else while this machine's CPUs wanted to run."""
    values = _all_cpus()
    return values[7] / os.sysconf("SC_CLK_TCK") if len(values) > 7 else 0.0


class ForeignCpu:
    """CPU used by processes that are not ours (other benchmarks, test runs) meanwhile.

    The machine is shared; a busy neighbour on the server's core makes the figures
    meaningless, so every phase reports how many cores others used while it ran. On a
    virtual machine the neighbours may also be outside it: ``stolen`` is how many
    cores' worth of time the hypervisor gave to others while this machine wanted them.
    """

    def __init__(self) -> None:
        self.busy = _busy_seconds()
        self.own = _own_cpu_seconds()
        self.steal = _steal_seconds()
        self.t0 = time.perf_counter()

    def stolen(self) -> float:
        wall = time.perf_counter() - self.t0
        return round((_steal_seconds() - self.steal) / wall, 3) if wall > 0 else 0.0

    def cores(self) -> float:
        wall = time.perf_counter() - self.t0
        other = (_busy_seconds() - self.busy) - (_own_cpu_seconds() - self.own)
        return round(max(0.0, other) / wall, 3) if wall > 0 else 0.0


def wait_quiet(limit_s: float, threshold: float = 0.1) -> float:
    """Wait (at most *limit_s*) for others to use less than *threshold* cores over 1 s.

    Returns the cores others used over the last second looked at.
    """
    deadline = time.perf_counter() + limit_s
    while True:
        meter = ForeignCpu()
        time.sleep(1.0)
        used = meter.cores()
        if used < threshold or time.perf_counter() >= deadline:
            return used
        note(f"scan: others use {used:.2f} cores, waiting for a quiet machine")
