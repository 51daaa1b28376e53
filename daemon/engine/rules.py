"""A flow's rules: the vocabulary the configuration and the presets speak (DESIGN.md).

Sides are ``left`` (the system of record, usually the ERP) and ``right`` (usually the CRM).
Directional settings are named after where the effect lands: ``create.to_right`` says when a
left record with no partner is created in the right system; ``delete.to_right`` says what a
left delete does to its right partner.
"""
from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Side = Literal["left", "right"]
Direction = Literal["both", "left_to_right", "right_to_left"]
Policy = Literal["left_wins", "right_wins", "newest_wins", "arbitrary"]
Ownership = Literal["revert", "ignore"]
CreateMode = Literal["always", "never", "push", "filter"]
DeleteAction = Literal["delete", "mark", "unlink", "ignore"]
Transform = str | dict[str, Any]


def other(side: Side) -> Side:
    return "right" if side == "left" else "left"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Condition(Strict):
    """One test on a record's field: ``{field = "Type", op = "eq", value = "Customer"}``, or
    ``{any_of = [...]}``: holds when at least one of its conditions does (BB-8's conditions,
    "a customer, or a prospect with a VAT number")."""
    field: str = ""
    op: Literal["eq", "ne", "in", "not_in", "truthy", "falsy", "longer_than",
                "not_longer_than", "in_text", "not_in_text"] = "eq"
    value: Any = None
    any_of: list["Condition"] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> "Condition":
        if bool(self.field) == bool(self.any_of):
            raise ValueError("a condition names either a field or any_of, not both")
        return self


def condition_fields(conditions: list[Condition]) -> list[str]:
    """The fields a list of conditions looks at (what must be read to test them)."""
    out: list[str] = []
    for c in conditions:
        out += condition_fields(c.any_of) if c.any_of else [c.field]
    return out


def holds(conditions: list[Condition], values: Mapping[str, Any]) -> bool:
    """Whether a record's values meet every condition."""
    for c in conditions:
        if c.any_of:
            if not any(holds([x], values) for x in c.any_of):
                return False
            continue
        v = values.get(c.field)
        if c.op == "eq" and v != c.value:
            return False
        if c.op == "ne" and v == c.value:
            return False
        if c.op == "in" and v not in (c.value or []):
            return False
        if c.op == "not_in" and v in (c.value or []):
            return False
        if c.op == "truthy" and not v:
            return False
        if c.op == "falsy" and v:
            return False
        if c.op == "longer_than" and not (isinstance(v, str) and len(v) > int(c.value)):
            return False
        if c.op == "not_longer_than" and isinstance(v, str) and len(v) > int(c.value):
            return False
        # text compared as people read it: case and white space do not matter (a configured
        # list of progress names against the vendor's free text, DT-7)
        if c.op == "in_text" and _text(v) not in {_text(x) for x in c.value or []}:
            return False
        if c.op == "not_in_text" and _text(v) in {_text(x) for x in c.value or []}:
            return False
    return True


def _text(value: Any) -> str | None:
    return None if value is None else " ".join(str(value).split()).casefold()


class FieldRule(Strict):
    left: str
    right: str
    name: str = ""
    direction: Direction | None = None          # narrows the flow's direction
    to_right: list[Transform] = Field(default_factory=list)
    to_left: list[Transform] = Field(default_factory=list)
    ownership: Ownership | None = None          # for one-way fields; default: the flow's
    ref: str | None = None                      # a flow whose links translate this id field
    on_create_only: bool = False                # written when the record is created, never after
    # the field flows from a side only for records of that side that meet these conditions
    # (BB-8: a custom field synchronised under a condition), e.g. ``when = { left = [...] }``
    when: dict[Side, list[Condition]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _name(self) -> "FieldRule":
        if not self.name:
            object.__setattr__(self, "name", self.left)
        return self


class CreateRule(Strict):
    mode: CreateMode = "always"
    when: list[Condition] = Field(default_factory=list)   # for mode = "filter"


class DeleteRule(Strict):
    action: DeleteAction = "ignore"
    mark: dict[str, Any] = Field(default_factory=dict)     # fields set by action = "mark"


class MatchKey(Strict):
    """A natural key tried before any create. ``when`` makes it conditional (AJ-2).

    ``left`` and ``right`` are one path each, or a list of paths: a key made of several
    fields (a ticket is its project and its location), each part normalised, compared
    whole; a record missing a part has no value for that key."""
    left: str | list[str]
    right: str | list[str]
    normalize: Literal["text", "name", "email", "vat", "phone", "exact"] = "text"
    when: list[Condition] = Field(default_factory=list)   # tested on the source record

    def paths(self, side: Side) -> list[str]:
        value = self.left if side == "left" else self.right
        return [value] if isinstance(value, str) else list(value)


class Derive(Strict):
    """Records read out of a source record (DESIGN.md, derived records).

    ``entries``: the path of a list inside the source record (a project's ``Items``); each
    of its entries is a record of its own. Without it, the source record itself is read again
    as another kind of record (a project's client). ``id``: the paths whose values, joined
    by "/", name a derived record. ``scope = "parent"``: the id is the parent's id, "/", then
    that; a parent read again without an entry it had is a delete of that entry's derived
    record. ``scope = "global"``: the id alone (the distinct catalog products of all
    projects): read once per step whoever lists it first, never deleted by its absence.
    The parent's own fields are at hand under ``parent`` (``Parent.Name``); ``keys`` adds
    fields joined from several paths (``{ TicketKey = ["Parent.Id", "LocationId"] }``),
    e.g. the id of a record derived by another flow, for a reference field."""
    entries: str | None = None
    id: list[str] = Field(default_factory=lambda: ["Id"], min_length=1)
    scope: Literal["parent", "global"] = "parent"
    parent: str = "Parent"
    keys: dict[str, list[str]] = Field(default_factory=dict)


class Requirement(Strict):
    """What a record of ``side`` must meet to take part at all; one that does not is not
    matched, created or linked, and is reported for review with ``message`` (BB-2's vendor
    rule: a third party without a VAT number is not synchronised)."""
    side: Side
    when: list[Condition]
    message: str
class Related(Strict):
    """Records of another entity on one side whose changes count as changes of the record they
    name (AJ-3: time or expenses entered, an invoice finalised, a receipt entered on a
    project). ``key`` is the related record's field holding the id of this flow's record on
    that side; ``when`` narrows which related records count."""
    side: Side
    entity: str
    key: str
    when: list[Condition] = Field(default_factory=list)


class PerSide(Strict):
    left: Any = None
    right: Any = None

    def of(self, side: Side) -> Any:
        return self.left if side == "left" else self.right


class Creates(Strict):
    to_right: CreateRule = CreateRule()
    to_left: CreateRule = CreateRule()

    def toward(self, target: Side) -> CreateRule:
        return self.to_right if target == "right" else self.to_left


class Deletes(Strict):
    to_right: DeleteRule = DeleteRule()
    to_left: DeleteRule = DeleteRule()

    def toward(self, target: Side) -> DeleteRule:
        return self.to_right if target == "right" else self.to_left


class FlowRules(Strict):
    name: str
    left_entity: str
    right_entity: str
    direction: Direction = "both"
    fields: list[FieldRule]
    owner: Side | None = None                   # the side that owns whole records (SG-2)
    # with conditions, the owner owns only its records that meet them (tested on the owner's
    # record); the others are shared: a prospect two-way, a customer owned by the ERP (SG-8)
    owner_when: list[Condition] = Field(default_factory=list)
    ownership: Ownership = "ignore"
    conflict: Policy = "newest_wins"
    initial: Side | None = None                 # who wins on a first link; default owner
    create: Creates = Creates()
    delete: Deletes = Deletes()
    soft_delete: dict[Side, dict[str, Any]] = Field(default_factory=dict)
    match: list[MatchKey] = Field(default_factory=list)
    filter: dict[Side, list[Condition]] = Field(default_factory=dict)
    on_filter_exit: Literal["unlink", "ignore"] = "unlink"
    # records of a side flow to the other side (their fields, their creates) only when they
    # meet these conditions; the others still take part in matching and receive the other
    # side's values (BB-5: CRM -> BOB only for BobSync customers)
    flows_when: dict[Side, list[Condition]] = Field(default_factory=dict)
    require: list[Requirement] = Field(default_factory=list)
    # the field that names a record to people, per side (the correspondence table, BB-6)
    title: dict[Side, str] = Field(default_factory=dict)
    depends_on: list[str] = Field(default_factory=list)
    read_only_marker: dict[Side, dict[str, Any]] = Field(default_factory=dict)
    # values a new record gets in that side when the source gave none; a value written
    # ``{ option = "admin" }`` is that side's reference data of that name (SG-5)
    create_defaults: dict[Side, dict[str, Any]] = Field(default_factory=dict)
    external_id: dict[Side, str] = Field(default_factory=dict)
    derive: dict[Side, Derive] = Field(default_factory=dict)
    batch_size: int | None = Field(default=None, gt=0)
    batch_label: str = ""                       # what the batches count ("projects")
    batch_on: Side | None = None                # the side batch_size limits (None: both)
    # flows that must have finished their batches before this one runs (AJ-4)
    waits_for: list[str] = Field(default_factory=list)
    # fields written on a side's record when a match links it (AJ-2: sync turned on)
    link_marks: dict[Side, dict[str, Any]] = Field(default_factory=dict)
    related: list[Related] = Field(default_factory=list)
    overlap_seconds: float = Field(default=60.0, ge=0)
    # the cursor stops this much before the vendor's clock (its Date header has whole seconds)
    clock_skew_seconds: float = Field(default=1.0, ge=0)
    # a record that fails the same way this many runs in a row is no longer retried every run
    quarantine_after: int = Field(default=5, ge=1)
    delete_threshold: float = Field(default=0.1, ge=0, le=1)
    delete_threshold_min: int = Field(default=5, ge=0)
    # at most this many writes in flight; within it the step adapts to the systems' latency
    # and rate limit (connectors/pace.py)
    concurrency: int = Field(default=32, gt=0)

    @field_validator("fields")
    @classmethod
    def _unique_names(cls, fields: list[FieldRule]) -> list[FieldRule]:
        names = [f.name for f in fields]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"field names must be unique, repeated: {sorted(dup)}")
        return fields

    @model_validator(mode="after")
    def _owner_when(self) -> "FlowRules":
        if self.owner_when and self.owner is None:
            raise ValueError("owner_when needs an owner")
        return self

    def entity(self, side: Side) -> str:
        return self.left_entity if side == "left" else self.right_entity

    def field_direction(self, f: FieldRule) -> Direction:
        if self.direction == "both":
            return f.direction or "both"
        if f.direction in (None, "both", self.direction):
            return self.direction
        raise ValueError(f"flow {self.name}: field {f.name} goes against the flow's direction")

    def flows(self, f: FieldRule, source: Side) -> bool:
        d = self.field_direction(f)
        return d == "both" or d == ("left_to_right" if source == "left" else "right_to_left")

    def paths(self, side: Side) -> list[str]:
        return [getattr(f, side) for f in self.fields]
