"""Sequences the guarantees state machine (test_guarantees_state_machine.py) found, replayed
step by step so that they are checked on every run, not only when its random search meets
them again. Each ended with a plan that was not what the run then did."""
from __future__ import annotations

import pytest

from tests.engine.test_guarantees_state_machine import Guarantees


@pytest.fixture
def machine():
    state = Guarantees()
    state.setup()
    yield state
    state.teardown()


def test_a_record_deleted_and_created_again_with_its_key_is_planned_as_it_runs(machine):
    """The left record is deleted and another made with its key. The run deletes the right
    partner first, so the new record no longer finds it and is created; the plan found the
    partner still linked and sent the new record to review."""
    machine.create(a="", b="", c="", key="k0", side="left")
    machine.quiescent_sync_checks()
    machine.delete(n=0, side="left")
    machine.create(a="", b="", c="", key="k0", side="left")
    machine.quiescent_sync_checks()


def test_a_lost_create_whose_source_was_deleted_since_is_planned_as_it_runs(machine):
    """A create cut off after it was made (found again by its key) whose source record was
    deleted meanwhile: the run wrote the owned field back to the deleted source (a record
    error, not found), the plan counted that write as done."""
    m = machine
    m.sync_while_a_record_is_edited_mid_page(n=0, side="left", value="")
    for _ in range(10):
        m.quiescent_sync_checks()
    m.create(a="", b="a", c="", key="k11", side="right")
    m.create(a=None, b="Δx", c="", key="k0", side="right")
    m.sync_while_a_record_is_edited_mid_page(n=2, side="right", value=None)
    m.sync_with_failing_writes(faults=["before", "after"], side="right")
    m.create(a="b", b=" padded ", c="c", key="k3", side="left")
    m.create(a=None, b="", c="a", key="k0", side="left")
    m.sync_while_a_record_is_edited_mid_page(n=32, side="right", value=" padded ")
    m.sync_with_crash_after_create(side="left")
    m.edit(field=1, n=29, side="left", value="c")
    m.delete(n=23, side="right")
    m.sync_with_failing_writes(faults=[None], side="right")
    m.sync_with_failing_writes(faults=["after"], side="left")
    m.edit(field=0, n=42, side="right", value=None)
    m.sync_while_a_record_is_edited_mid_page(n=8, side="left", value=" padded ")
    m.sync_with_failing_writes(faults=["after"], side="left")
    m.sync_with_crash_after_create(side="right")
    m.delete(n=24, side="left")
    m.create(a=None, b=None, c=" padded ", key="k1", side="right")
    m.sync_with_failing_writes(faults=["after"], side="left")
    m.delete(n=21, side="right")
    m.quiescent_sync_checks()


def _holds_then_a_right_record_deleted(m) -> None:
    """The start both sequences below share: three synced pairs, a left listing suddenly
    empty (the deletes toward the right held), a left edit, a right record deleted."""
    m.quiescent_sync_checks()
    m.create(a="", b="", c="", key="k0", side="left")
    m.quiescent_sync_checks()
    m.full_sync_with_one_side_suddenly_empty(side="left")
    m.create(a="", b="", c="", key="k7", side="left")
    m.sync()
    m.quiescent_sync_checks()
    m.create(a="", b="", c="", key="k11", side="left")
    for _ in range(10):
        m.quiescent_sync_checks()
    m.full_sync_with_one_side_suddenly_empty(side="left")
    m.edit(field=0, n=22, side="left", value="")
    m.delete(n=33, side="right")
    m.tick(seconds=30)
    m.sync()
    m.delete(n=19, side="left")


def test_a_record_deleted_while_a_delete_toward_it_was_held_is_deleted_on_the_other_side(
        machine):
    """A listing that was suddenly empty held the deletes toward the right; then a right
    record was really deleted, and its left partner edited. The update found the right
    record gone, and failed so every run until the error was quarantined: the deletion was
    never carried over and the left record stayed unsynced. The record a write finds gone is
    now read by id next run, so its deletion is planned."""
    m = machine
    _holds_then_a_right_record_deleted(m)
    m.sync_while_a_record_is_edited_mid_page(n=36, side="left", value="a")
    m.sync()
    m.delete(n=38, side="right")
    m.create(a="", b="", c="", key="k0", side="left")
    m.sync()
    m.sync_while_a_record_is_edited_mid_page(n=0, side="right", value="")
    for _ in range(3):
        m.sync()
    m.tick(seconds=2)
    m.quiescent_sync_checks()


def test_a_held_delete_whose_record_went_meanwhile_is_planned_as_it_runs(machine):
    """The same kind of sequence, ending in a plan that held a delete the run did not."""
    m = machine
    _holds_then_a_right_record_deleted(m)
    m.sync_while_a_record_is_edited_mid_page(n=0, side="left", value="a")
    m.sync()
    m.delete(n=0, side="right")
    m.create(a="", b="", c="", key="k0", side="left")
    m.sync()
    m.sync_while_a_record_is_edited_mid_page(n=0, side="right", value="")
    m.full_sync_with_one_side_suddenly_empty(side="left")
    m.quiescent_sync_checks()


def test_a_review_whose_linked_candidate_is_deleted_is_decided_again(machine):
    """A right record matched a left one already linked (to a right record since deleted, its
    delete toward the left held): in review, parked until it changed. The held delete,
    approved, deleted the left record, but the parked record was never decided again: it
    stayed unsynced. Reviews that name a record the step deletes or unlinks are now read again
    and decided in the same step."""
    m = machine
    m.create(a="", b="", c="", key="k0", side="right")
    m.create(a="", b="", c="", key="k5", side="right")
    m.create(a="", b="", c="", key="k11", side="left")
    for _ in range(4):
        m.quiescent_sync_checks()
    m.delete(n=7, side="right")
    m.full_sync_with_one_side_suddenly_empty(side="left")
    for _ in range(3):
        m.quiescent_sync_checks()
    m.sync_with_crash_after_create(side="left")
    m.quiescent_sync_checks()
    m.quiescent_sync_checks()
    m.delete(n=49, side="left")
    m.quiescent_sync_checks()
    m.create(a="", b="", c="", key="k0", side="left")
    m.quiescent_sync_checks()
    m.quiescent_sync_checks()
    m.full_sync_with_one_side_suddenly_empty(side="right")
    m.sync()
    m.sync_with_flaky_versions()
    m.sync()
    m.sync_with_flaky_versions()
    m.sync_with_failing_writes(faults=["before", None, "after"], side="left")
    m.delete(n=22, side="right")
    m.edit(field=0, n=24, side="right", value=" padded ")
    m.sync_with_failing_writes(faults=["after", "after"], side="left")
    m.delete(n=9, side="left")
    m.sync_with_flaky_versions()
    m.sync()
    m.edit(field=1, n=24, side="left", value=None)
    m.sync_with_crash_after_create(side="right")
    m.create(a="", b=None, c="a", key="k5", side="right")
    m.sync_with_flaky_versions()
    m.sync()
    m.quiescent_sync_checks()
