"""The container sync daemon's two passes (Swift's container-sync): each replica sends
its share of the rows past sync point 1, and then, a pass later, every row up to it
(the backstop for the other replicas); failures and an unreachable destination keep the
points before the row. The rows are sent by a stand-in that records them. And the
manifest a destination keeps when sync sends one as stored."""

from __future__ import annotations

import asyncio
import hashlib
import json
from types import SimpleNamespace

import httpx
import pytest

from cumulo.object_store.api.large_objects import manifest_totals, synced_entries
from cumulo.object_store.container_sync import SyncTarget
from cumulo.object_store.daemons.container_sync import (
    ContainerSyncer,
    Job,
    SyncPoints,
    SyncStats,
    share_of,
)
from cumulo.object_store.errors import SwiftError
from cumulo.object_store.ring.ring import hash_path

ACCOUNT, CONTAINER = "AUTH_a", "c"
TARGET = SyncTarget("http://127.0.0.1:8080/v1/AUTH_b/c", "REALM", "key")
NAMES = [f"obj-{i}" for i in range(30)]


class Rows:
    """A replica's container database: its rows in ROWID order (rows_since as the
    broker's)."""

    def __init__(self, names: list[str]) -> None:
        self.rows = [
            {"row_id": i + 1, "name": n, "deleted": 0, "created_at": "1.00000"}
            for i, n in enumerate(names)
        ]

    def rows_since(self, row_id: int, limit: int) -> list[dict]:
        return [r for r in self.rows if r["row_id"] > row_id][:limit]


class Recorder(ContainerSyncer):
    def __init__(self, tmp_path, failing=(), unreachable=()) -> None:
        ring = SimpleNamespace(hash_of=lambda a, c, o: hash_path("pre", "suf", a, c, o))
        super().__init__(SimpleNamespace(state_dir=tmp_path, container_ring=ring))
        self.sent: list[str] = []
        self.failing = set(failing)
        self.unreachable = set(unreachable)

    async def _sync_row(self, client, job, target, row, stats) -> None:
        if row["name"] in self.unreachable:
            raise httpx.ConnectError("refused")
        if row["name"] in self.failing:
            raise SwiftError(413)
        self.sent.append(row["name"])
        stats.puts += 1


def job(ordinal: int, rows: Rows) -> Job:
    return Job(f"d{ordinal}/{ACCOUNT}/{CONTAINER}", rows, ACCOUNT, CONTAINER, "//realm/x/AUTH_b/c",
               "user-key", 0, ordinal, 3)  # fmt: skip


def one_pass(syncer: Recorder, job: Job, start: SyncPoints) -> tuple[SyncPoints, SyncStats]:
    stats = SyncStats()
    done = asyncio.run(syncer._sync_container(None, job, TARGET, start, stats))
    return done, stats


def share(ordinal: int) -> list[str]:
    return [
        n for n in NAMES if share_of(hash_path("pre", "suf", ACCOUNT, CONTAINER, n), 3) == ordinal
    ]


def test_the_shares_split_the_rows_among_the_replicas():
    shares = [share(k) for k in range(3)]
    assert sorted(sum(shares, [])) == sorted(NAMES)
    assert all(shares)  # 30 names: each replica has some
    # The ring's hash decides: the first 4 bytes of the md5, big-endian, modulo replicas.
    assert share_of("0000000a" + "0" * 24, 3) == 1
    assert share_of("ffffffff" + "0" * 24, 4) == 3


def test_each_replica_sends_its_share_first_and_every_row_on_its_second_pass(tmp_path):
    for ordinal in range(3):
        syncer = Recorder(tmp_path)
        replica = job(ordinal, Rows(NAMES))
        first, stats = one_pass(syncer, replica, SyncPoints())
        assert syncer.sent == share(ordinal)
        assert stats.puts == len(share(ordinal))
        assert first == SyncPoints(point1=30, point2=-1)
        # The second pass looks at every row up to point 1 (the others' shares too,
        # should their replica be down): the destination's HEAD skips what is there.
        syncer.sent.clear()
        second, _ = one_pass(syncer, replica, first)
        assert syncer.sent == NAMES
        assert second == SyncPoints(30, 30)
        syncer.sent.clear()
        assert one_pass(syncer, replica, second)[0] == second and syncer.sent == []


def test_new_rows_go_to_the_first_stage_and_then_to_the_backstop(tmp_path):
    rows = Rows(NAMES[:10])
    syncer = Recorder(tmp_path)
    points, _ = one_pass(syncer, job(0, rows), SyncPoints())
    points, _ = one_pass(syncer, job(0, rows), points)
    assert points == SyncPoints(10, 10)
    rows.rows = Rows(NAMES).rows  # 20 more rows came in
    syncer.sent.clear()
    points, _ = one_pass(syncer, job(0, rows), points)
    assert syncer.sent == [n for n in share(0) if n in NAMES[10:]]
    assert points == SyncPoints(30, 10)


def test_a_failed_row_is_tried_again_and_does_not_hold_back_the_rest(tmp_path):
    bad = NAMES[4]
    syncer = Recorder(tmp_path, failing=[bad])
    replica = job(share_of(hash_path("pre", "suf", ACCOUNT, CONTAINER, bad), 3), Rows(NAMES))
    first, stats = one_pass(syncer, replica, SyncPoints())
    assert bad in share(replica.ordinal) and bad not in syncer.sent
    assert stats.failures == 1
    assert first.point1 == 30  # the first stage moves on: the second stage tries again
    second, stats = one_pass(syncer, replica, first)
    assert stats.failures == 1 and syncer.sent[-1] == NAMES[-1]  # the rows after it went
    assert second == SyncPoints(30, 4)  # before the failed row (ROWID 5)
    syncer.failing.clear()
    syncer.sent.clear()
    third, stats = one_pass(syncer, replica, second)
    assert syncer.sent == NAMES[4:] and stats.failures == 0
    assert third == SyncPoints(30, 30)


@pytest.mark.parametrize("stage", ["first", "second"])
def test_an_unreachable_destination_ends_the_pass_before_the_row(tmp_path, stage):
    replica = job(0, Rows(NAMES))
    down = share(0)[2]
    row_id = NAMES.index(down) + 1
    syncer = Recorder(tmp_path)
    start = SyncPoints()
    if stage == "second":
        start, _ = one_pass(syncer, replica, start)
        syncer.sent.clear()
    syncer.unreachable = {down}
    stopped, stats = one_pass(syncer, replica, start)
    assert stats.failures == 1
    before = NAMES[: row_id - 1]
    if stage == "first":
        assert syncer.sent == [n for n in share(0) if n in before]
        assert stopped == SyncPoints(row_id - 1, -1)
    else:
        assert syncer.sent == before
        assert stopped == SyncPoints(30, row_id - 1)
    # Back: the next pass sends that row (and what the second stage had not seen).
    syncer.unreachable.clear()
    syncer.sent.clear()
    one_pass(syncer, replica, stopped)
    if stage == "first":
        assert syncer.sent == before + [n for n in share(0) if n not in before]
    else:
        assert syncer.sent == NAMES[row_id - 1 :]


def test_saved_points_follow_their_destination(tmp_path):
    points_of = ContainerSyncer._points_of
    saved = {"sync_to": "//r/c/a/x", "point1": 7, "point2": 3}
    assert points_of(saved, "//r/c/a/x") == SyncPoints(7, 3)
    assert points_of(saved, "//r/c/a/other") == SyncPoints()  # everything again
    # Points the one-replica daemon kept: every row up to `row` was seen.
    assert points_of({"sync_to": "//r/c/a/x", "row": 9}, "//r/c/a/x") == SyncPoints(9, 9)


def test_a_synced_manifest_is_kept_as_the_source_stored_it():
    seg = {"name": "/segs/one", "bytes": 10, "hash": "a" * 32, "content_type": "text/plain"}
    ranged = {"name": "segs/two", "bytes": 8, "hash": "b" * 32, "range": "2-4", "sub_slo": True}
    body = json.dumps([seg, ranged]).encode()
    entries = synced_entries(body)
    assert entries == [seg, {**ranged, "name": "/segs/two", "range": [2, 4]}]
    # Swift's SLO ETag: the segments' ETags, a range's as `<etag>:<first>-<last>;`.
    etag, size = manifest_totals(entries)
    expected = hashlib.md5(("a" * 32 + "b" * 32 + ":2-4;").encode()).hexdigest()
    assert (etag, size) == (expected, 13)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "Manifest must be valid JSON."),
        (b"[]", "Manifest must be a list."),
        (b'[{"path": "/segs/one", "etag": "x"}]', "Index 0: not a manifest entry"),
        (b'[{"name": "/segs", "hash": "x", "bytes": 1}]', "Index 0: not a manifest entry"),
        (b'[{"name": "/s/o", "hash": "x", "bytes": 4, "range": "9-"}]', "Unsatisfiable Range"),
    ],
)
def test_a_synced_manifest_that_is_not_one_is_refused(body, message):
    with pytest.raises(ValueError, match=message):
        synced_entries(body)
