"""Pure tests of the AJ engine features: a batch's messages (backlog.py) and the marks a
link writes (plan.with_marks)."""
from __future__ import annotations

from daemon.engine.actions import Write
from daemon.engine.backlog import Batch
from daemon.engine.plan import with_marks


def test_batch_says_how_many_wait_and_how_many_more_runs():
    b = Batch(500, "projects", taken=500, waiting=1100)
    assert b.runs_left == 3
    assert b.message() == (
        "500 of 1,600 projects synchronised. The sync contained more than 500 projects: "
        "re-run the manual or auto sync 3 more times to sync the remaining 1,100 "
        "(continuing automatically)")
    assert Batch(500, "projects", 500, 100, before=1000).message(automatic=False).endswith(
        "1 more time to sync the remaining 100")


def test_the_last_batch_says_sync_completed_without_more_batches():
    done = Batch(500, "projects", taken=100, waiting=0, before=1500)
    assert done.runs_left == 0
    assert done.message() == "Sync Completed: 1,600 projects synchronised"


def test_marks_join_a_links_write_or_make_one_and_skip_what_is_already_there():
    ids = {"left": "7", "right": "P-1"}
    cur = {"left": {"SyncToCRM": False}, "right": {"AjeraSync": "Y", "Name": "A"}}
    versions = {"left": "v7", "right": None}
    existing = (Write("right", "P-1", {"Name": "B"}, cur["right"], {"Name": "update"}),)
    out = with_marks(existing, {"left": {"SyncToCRM": True}, "right": {"AjeraSync": "Y"}},
                     ids, cur, versions)
    by_side = {w.side: w for w in out}
    assert by_side["left"].values == {"SyncToCRM": True}
    assert by_side["left"].why == {"SyncToCRM": "link_mark"} and by_side["left"].version == "v7"
    assert by_side["right"].values == {"Name": "B"}            # AjeraSync already Y
    assert with_marks((), {}, ids, cur, versions) == ()
