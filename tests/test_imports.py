"""Import boundaries: pure modules stay light; edge and core never import each other."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("aiohttp", "lmdb", "zeroconf", "sqlite3")


def modules_after(imports: str) -> set[str]:
    code = f"import sys; {imports}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=60)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["edge.decision", "sync.codes", "sync.rules",
                                    "sync.snapshot", "sync.wire", "sync.reconcile",
                                    "sync.feed"])
def test_pure_modules_import_no_io_library(module: str) -> None:
    loaded = modules_after(f"import {module}")
    assert module in loaded
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]


def test_edge_never_imports_core_and_core_never_imports_edge() -> None:
    edge = modules_after("import edge.app, edge.cli, edge.follower, edge.demo")
    assert not [m for m in edge if m == "core" or m.startswith("core.")]
    core = modules_after("import core.app, core.cli")
    assert not [m for m in core if m == "edge" or m.startswith("edge.")]
