"""The state tables. Declared with SQLModel; the hot paths use their ``__table__`` with
SQLAlchemy Core in batches (see queries.py). JSON columns hold orjson-encoded text so that
SQLite and PostgreSQL store them the same way."""
from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import Column, DateTime, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

# Aware UTC timestamps: TIMESTAMP WITH TIME ZONE on PostgreSQL (asyncpg refuses an aware value
# for a naive column); SQLite stores the text as before.
TZ = DateTime(timezone=True)


class Link(SQLModel, table=True):
    """A pair of records that are the same thing in both systems, with the base of each."""
    __tablename__ = "links"
    __table_args__ = (
        UniqueConstraint("integration", "flow", "left_id", name="uq_links_left"),
        UniqueConstraint("integration", "flow", "right_id", name="uq_links_right"),
        # keyset over one flow's links by id (unseen_links, links_of): revision 0005
        Index("ix_links_order", "integration", "flow", "id"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    integration: str
    flow: str
    left_id: str
    right_id: str
    left_base: str = Field(sa_column=Column(Text, nullable=False))     # JSON {path: value}
    right_base: str = Field(sa_column=Column(Text, nullable=False))
    left_hash: str
    right_hash: str
    # how many fields each base holds, written with it (``apply.base_row``; revision 0008):
    # a base whole for the flow's fields holds them all (see ``queries.link_digests``)
    left_fields: Optional[int] = None
    right_fields: Optional[int] = None
    left_version: Optional[str] = None
    right_version: Optional[str] = None
    state: str = "ok"           # ok | gone_left | gone_right (kept pair, one side deleted)
    updated_at: datetime = Field(sa_type=TZ)


class Cursor(SQLModel, table=True):
    __tablename__ = "cursors"
    integration: str = Field(primary_key=True)
    flow: str = Field(primary_key=True)
    side: str = Field(primary_key=True)
    value: str = Field(sa_column=Column(Text, nullable=False))   # JSON {"at": iso, "ids": []}
    updated_at: datetime = Field(sa_type=TZ)


class Staged(SQLModel, table=True):
    """Changed records of the current step, streamed here so memory stays flat. Read back
    in chunks by keyset on the staging order (``ix_staged_order``, revision 0005): each chunk
    reads only its own rows, so a step costs the same per record at any size."""
    __tablename__ = "staged"
    __table_args__ = (Index("ix_staged_order", "run_id", "flow", "side", "seq"),)
    run_id: int = Field(primary_key=True)
    flow: str = Field(primary_key=True)
    side: str = Field(primary_key=True)
    record_id: str = Field(primary_key=True)
    seq: int
    modified: Optional[str] = None
    deleted: bool = False       # a tombstone, a soft-delete flag, or unseen in a full listing
    passes: bool = True         # the side's filter holds
    excluded: bool = False      # read, but left out by an exclusion (still counts as seen)
    pushed: bool = False        # brought in by an explicit push (UL-3)
    data: str = Field(sa_column=Column(Text, nullable=False))
    hash: str
    version: Optional[str] = None   # as read: a conditional write checks it (revision 0003)


class StagedKey(SQLModel, table=True):
    """Normalised natural keys of staged records, so matching is one query per chunk."""
    __tablename__ = "staged_keys"
    __table_args__ = (Index("ix_staged_keys_lookup", "run_id", "flow", "side", "key", "value"),)
    run_id: int = Field(primary_key=True)
    flow: str = Field(primary_key=True)
    side: str = Field(primary_key=True)
    record_id: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    value: str


class Parked(SQLModel, table=True):
    """An unlinked record that found no partner and may not be created (create never/push,
    or an ambiguous match): not looked up again while it and the flow's rules stay the same."""
    __tablename__ = "parked"
    integration: str = Field(primary_key=True)
    flow: str = Field(primary_key=True)
    side: str = Field(primary_key=True)
    record_id: str = Field(primary_key=True)
    hash: str
    updated_at: datetime = Field(sa_type=TZ)


class Intent(SQLModel, table=True):
    """A create announced before the remote call, cleared in the commit that links it."""
    __tablename__ = "intents"
    integration: str = Field(primary_key=True)
    flow: str = Field(primary_key=True)
    target: str = Field(primary_key=True)
    source_id: str = Field(primary_key=True)
    keys: str = Field(sa_column=Column(Text, nullable=False))    # JSON {target path: value}
    created_at: datetime = Field(sa_type=TZ)


class Run(SQLModel, table=True):
    __tablename__ = "runs"
    id: Optional[int] = Field(default=None, primary_key=True)
    integration: str = Field(index=True)
    trigger: str
    status: str = "running"     # running | ok | errors | failed | stopped
    message: str = ""
    started_at: datetime = Field(sa_type=TZ)
    finished_at: Optional[datetime] = Field(default=None, sa_type=TZ)


class Step(SQLModel, table=True):
    __tablename__ = "steps"
    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int = Field(index=True)
    flow: str
    status: str = "running"     # running | ok | errors | failed | skipped
    counts: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    message: str = ""
    started_at: datetime = Field(sa_type=TZ)
    finished_at: Optional[datetime] = Field(default=None, sa_type=TZ)


class RecordError(SQLModel, table=True):
    __tablename__ = "record_errors"
    # revisit_ids: the failed writes of one flow and side to read again (revision 0002)
    __table_args__ = (Index("ix_record_errors_retry", "integration", "flow", "side", "retry"),)
    integration: str = Field(primary_key=True)
    flow: str = Field(primary_key=True)
    side: str = Field(primary_key=True)
    record_id: str = Field(primary_key=True)
    message: str
    retry: bool = True          # re-read next run (write failures); False: shown only
    count: int = 1              # runs in a row it failed the same way
    run_id: int
    updated_at: datetime = Field(sa_type=TZ)
    # quarantined: failed the same way ``quarantine_after`` runs in a row; no longer re-read
    # every run, retried when the record's hash moves from ``hash`` or by ``accord retry``
    quarantined: bool = False
    hash: Optional[str] = None


class Exclusion(SQLModel, table=True):
    __tablename__ = "exclusions"
    integration: str = Field(primary_key=True)
    flow: str = Field(primary_key=True)
    side: str = Field(primary_key=True)
    record_id: str = Field(primary_key=True)
    mode: str                   # never | skip_once
    reason: str = ""
    created_at: datetime = Field(sa_type=TZ)


class Review(SQLModel, table=True):
    """An unlinked record whose match was ambiguous: never merged, shown until resolved."""
    __tablename__ = "reviews"
    integration: str = Field(primary_key=True)
    flow: str = Field(primary_key=True)
    side: str = Field(primary_key=True)
    record_id: str = Field(primary_key=True)
    candidates: str = Field(sa_column=Column(Text, nullable=False))
    reason: str
    updated_at: datetime = Field(sa_type=TZ)


class HeldDelete(SQLModel, table=True):
    """A delete or mark the circuit-breaker held back, until ``accord approve``."""
    __tablename__ = "held_deletes"
    id: Optional[int] = Field(default=None, primary_key=True)
    integration: str = Field(index=True)
    flow: str
    link_id: int
    target: str                 # the side the delete would land on
    record_id: str
    action: str                 # delete | mark | unlink
    run_id: int
    approved: bool = False
    created_at: datetime = Field(sa_type=TZ)


class Audit(SQLModel, table=True):
    """Every write the daemon made, a row each (revision 0007): which run, and each field it
    wrote with its old and new value and the rule that decided it, as a JSON list of
    ``{"field", "old", "new", "rule"}``."""
    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_record", "integration", "record_id"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    run_id: int
    integration: str
    flow: str
    side: str
    record_id: str
    fields: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime = Field(sa_type=TZ)


class Reread(SQLModel, table=True):
    """A linked record whose answer left out a field that flows from it while the other side's
    value is known: read again by id by the next run of its flow (once), so the field is
    decided from both values instead of staying unsynced until the record changes
    (revision 0006)."""
    __tablename__ = "rereads"
    integration: str = Field(primary_key=True)
    flow: str = Field(primary_key=True)
    side: str = Field(primary_key=True)
    record_id: str = Field(primary_key=True)
    created_at: datetime = Field(sa_type=TZ)


class Push(SQLModel, table=True):
    """An explicit push of one record (UL-3), consumed by the next run of its flow."""
    __tablename__ = "pushes"
    integration: str = Field(primary_key=True)
    flow: str = Field(primary_key=True)
    side: str = Field(primary_key=True)
    record_id: str = Field(primary_key=True)
    created_at: datetime = Field(sa_type=TZ)


class Gate(SQLModel, table=True):
    """Something that stops an integration (or one flow) until a person approves it: a first
    run waiting for confirmation (its plan kept in ``detail``), a system that is not the
    instance the state was built with. The circuit-breaker's held deletes are the third kind,
    kept per link in ``held_deletes``."""
    __tablename__ = "gates"
    id: Optional[int] = Field(default=None, primary_key=True)
    integration: str = Field(index=True)
    flow: str = ""              # "" for the whole integration
    kind: str                   # first_run | instance
    message: str
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))   # JSON
    approved: bool = False
    created_at: datetime = Field(sa_type=TZ)
    approved_at: Optional[datetime] = Field(default=None, sa_type=TZ)


class Instance(SQLModel, table=True):
    """The identity of the system each side of an integration reached when its state was
    built (Connector.identity())."""
    __tablename__ = "instances"
    integration: str = Field(primary_key=True)
    side: str = Field(primary_key=True)
    identity: str
    updated_at: datetime = Field(sa_type=TZ)


class FlowState(SQLModel, table=True):
    """Per flow: the fingerprint of its mapped fields when its links were last brought up to
    date; a different one means new or changed fields to back-fill."""
    __tablename__ = "flow_state"
    integration: str = Field(primary_key=True)
    flow: str = Field(primary_key=True)
    fields: str = Field(sa_column=Column(Text, nullable=False))   # JSON: the field rules
    fingerprint: str
    updated_at: datetime = Field(sa_type=TZ)
class Pause(SQLModel, table=True):
    """An integration an operator paused: its scheduled runs and webhooks wait until resumed
    (kept in the state, so a restart or a reload keeps it paused)."""
    __tablename__ = "pauses"
    integration: str = Field(primary_key=True)
    reason: str = ""
    paused_at: datetime = Field(sa_type=TZ)


metadata = SQLModel.metadata
T = {t.name: t for t in metadata.sorted_tables}
