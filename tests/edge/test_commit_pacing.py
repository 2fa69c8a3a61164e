"""Group commit delay: writes handed over within the interval after a commit's start
share the next commit, so a busy node pays one commit's flushes for many scans."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edge.cli import main
from edge.index import Index
from edge.scanlog import MAX_COMMIT_INTERVAL_S, GroupCommitter
from tests.edge.inprocess import put_meta

INTERVAL_S = MAX_COMMIT_INTERVAL_S
"""Far longer than the hand-overs below take (microseconds, no await between them)."""


@contextlib.asynccontextmanager
async def running(
    path: Path, interval_s: float, pace_below: int = 0
) -> AsyncIterator[GroupCommitter]:
    """A started committer on a fresh index at *path*; stopped and closed after."""
    index = Index(path)
    committer = GroupCommitter(index, asyncio.get_running_loop(), interval_s=interval_s,
                               pace_below=pace_below)
    committer.start()
    try:
        yield committer
    finally:
        await committer.stop()
        index.close()


async def test_writes_within_the_interval_share_one_commit(tmp_path: Path) -> None:
    async with running(tmp_path / "n", INTERVAL_S) as committer:
        await committer.submit(put_meta(b"first"))
        assert committer.paced_seconds == 0.0  # an idle node commits at once
        before = committer.commits
        # Three separate hand-overs to the writer, while it waits for the interval.
        futures = [committer.submit(put_meta(b"k%d" % i), at_once=True) for i in range(3)]
        await asyncio.gather(*futures)
        assert committer.commits - before == 1
        assert committer.paced_seconds > 0.0
        index = committer._index
        with index.env.begin(db=index.meta) as txn:
            assert [txn.get(b"k%d" % i) for i in range(3)] == [b"1"] * 3


async def test_with_pace_below_only_small_commits_wait(tmp_path: Path) -> None:
    """A loaded node's hand-overs carry many scans: they commit at once; a lone scan
    right after a commit still waits for the interval, and gathers what follows."""
    async with running(tmp_path / "n", INTERVAL_S, pace_below=8) as committer:
        await committer.submit(put_meta(b"first"))
        await committer.submit(put_meta(b"big"), at_once=True, weight=8)
        assert committer.paced_seconds == 0.0  # right after a commit, but large
        before = committer.commits
        futures = [committer.submit(put_meta(b"k%d" % i), at_once=True) for i in range(3)]
        await asyncio.gather(*futures)
        assert committer.paced_seconds > 0.0  # small: waited
        assert committer.commits - before == 1


async def test_no_wait_once_the_interval_has_passed(tmp_path: Path) -> None:
    async with running(tmp_path / "n", 0.05) as committer:
        for i in range(3):
            await committer.submit(put_meta(b"k%d" % i))
            await asyncio.sleep(0.1)
        assert committer.commits == 3
        assert committer.paced_seconds == 0.0


async def test_without_an_interval_commits_never_wait(tmp_path: Path) -> None:
    async with running(tmp_path / "n", 0.0) as committer:
        await asyncio.gather(*(committer.submit(put_meta(b"k%d" % i)) for i in range(50)))
        for i in range(5):
            await committer.submit(put_meta(b"s%d" % i))
        assert committer.paced_seconds == 0.0


@pytest.mark.parametrize("interval", [-0.001, 0.051, float("nan"), float("inf")])
async def test_committer_refuses_bad_intervals(tmp_path: Path, interval: float) -> None:
    index = Index(tmp_path / "n")
    try:
        with pytest.raises(ValueError, match="commit interval"):
            GroupCommitter(index, asyncio.get_running_loop(), interval_s=interval)
    finally:
        index.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [*(("--commit-interval-ms", v) for v in ("-1", "51", "nan", "inf", "soon")),
     *(("--keep-days", v) for v in ("-1", "3651", "nan", "inf", "a month")),
     *(("--pace-below", v) for v in ("-1", "4097", "nan", "many"))],
)
def test_bounded_serve_options_refuse_bad_values(
    tmp_path: Path, option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--commit-interval-ms`` (0-50), ``--pace-below`` (0-``MAX_BATCH``) and
    ``--keep-days`` (0-3650, ``edge.retention``)."""
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--data", str(tmp_path / "n"), option, value])
    assert exited.value.code == 2
    assert option in capsys.readouterr().err
    assert not (tmp_path / "n").exists()
