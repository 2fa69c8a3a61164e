"""Group commit delay: writes handed over within the interval after a commit's start
share the next commit, so a busy node pays one commit's flushes for many scans."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge.cli import main
from edge.index import Index
from edge.scanlog import GroupCommitter

INTERVAL_S = 1.0
"""Far longer than the gaps between the hand-overs below, even on a slow machine."""


def _put(key: bytes):
    def op(txn, committer: GroupCommitter) -> None:
        txn.put(key, b"1", db=committer._index.meta)

    return op


async def test_writes_within_the_interval_share_one_commit(tmp_path: Path) -> None:
    index = Index(tmp_path / "n")
    committer = GroupCommitter(index, asyncio.get_running_loop(), interval_s=INTERVAL_S)
    committer.start()
    try:
        await committer.submit(_put(b"first"))  # starts the interval
        before = committer.commits
        futures = []
        for i in range(3):
            # Each in its own loop round: three separate hand-overs to the writer.
            futures.append(committer.submit(_put(b"k%d" % i)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*futures)
        assert committer.commits - before == 1
        assert committer.committed_ops >= 4
        with index.env.begin(db=index.meta) as txn:
            assert [txn.get(b"k%d" % i) for i in range(3)] == [b"1"] * 3
    finally:
        await committer.stop()
        index.close()


async def test_without_an_interval_each_hand_over_commits_alone(tmp_path: Path) -> None:
    index = Index(tmp_path / "n")
    committer = GroupCommitter(index, asyncio.get_running_loop(), interval_s=0.0)
    committer.start()
    try:
        before = committer.commits
        for i in range(3):
            await committer.submit(_put(b"k%d" % i))
        assert committer.commits - before == 3
    finally:
        await committer.stop()
        index.close()


@pytest.mark.parametrize("value", ["-1", "51", "nan", "inf", "soon"])
def test_commit_interval_option_refuses_bad_values(
    tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--data", str(tmp_path / "n"), "--commit-interval-ms", value])
    assert exited.value.code == 2
    assert "--commit-interval-ms" in capsys.readouterr().err
    assert not (tmp_path / "n").exists()
