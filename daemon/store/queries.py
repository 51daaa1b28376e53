"""Batched SQLAlchemy Core statements for the hot paths: one query per page, one
statement per batch. Every function takes an open connection; the caller owns the
transaction, so a batch of decisions commits together with its cursor.

The same statements run on SQLite and PostgreSQL (asyncpg): booleans are compared with
``is_(True)`` and bound as Python bools, timestamps are aware UTC values in TIMESTAMP WITH TIME
ZONE columns, JSON is text, a list of ids is one parameter (``_among``) sent in chunks (CHUNK),
and every query whose rows feed a list has an ORDER BY: PostgreSQL, unlike SQLite, returns rows
in no particular order."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import orjson
from sqlalchemy import (ARRAY, DateTime, and_, any_, bindparam, delete, func, insert,
                        literal_column, or_, select, tuple_, union, update)
from sqlalchemy.ext.asyncio import AsyncConnection

from daemon.store.db import dumps, loads, now
from daemon.store.tables import T

links, cursors, staged, intents = T["links"], T["cursors"], T["staged"], T["intents"]
errors, exclusions, reviews, held = (T["record_errors"], T["exclusions"], T["reviews"],
                                     T["held_deletes"])
audit, pushes, staged_keys = T["audit"], T["pushes"], T["staged_keys"]
rereads = T["rereads"]
parked = T["parked"]
CHUNK = 500          # ids per statement: rows of one chunk stay small on either database
# the staging order of a staged record no chunk reads: one equal to its linked base (quiet),
# or one a chunk already decided
OUTSIDE_CHUNKS = 0


def _dicts(result) -> list[dict]:
    """The rows of a result as plain dicts (the column names read once, not per row)."""
    keys = list(result.keys())
    return [dict(zip(keys, row)) for row in result]


def _among(conn: AsyncConnection, col, values: Sequence) -> Any:
    """``col IN (values)`` with the values bound as one parameter: a JSON array that SQLite
    reads with ``json_each``, an array for PostgreSQL (``= ANY``). A plain ``IN`` binds each
    value on its own, and SQLAlchemy expands those binds anew for every statement (the
    dearest part of a chunk's queries). Both forms still look each value up in ``col``'s
    index (tests/store/test_query_plans.py)."""
    return _one_of(conn.dialect.name, col, values=values)


def _one_of(dialect: str, col, name: str | None = None, values: Sequence | None = None) -> Any:
    """``_among`` for ``dialect``: with ``values``, bound now; with ``name`` instead, a
    statement built once (``_built``) whose values are given as ``_ids(dialect, values)``
    for the parameter ``name`` when it runs."""
    kw = {} if values is None else {"value": _ids(dialect, values)}
    if dialect == "sqlite":
        return col.in_(select(literal_column("value")).select_from(
            func.json_each(bindparam(name, **kw))))
    if dialect == "postgresql":
        return col == any_(bindparam(name, type_=ARRAY(col.type), **kw))
    return col.in_(bindparam(name, expanding=True, **kw))


def _ids(dialect: str, values: Sequence) -> Any:
    """The value of a ``_one_of`` parameter."""
    return orjson.dumps(list(values)).decode() if dialect == "sqlite" else list(values)


def _built(key: tuple, build: Callable[[], Any]) -> Any:
    """The statement ``build`` makes, built once per ``key`` (the statement's shape: the
    function, the dialect, which side), its values named parameters. A chunk runs the same
    few queries again and again: building each anew, and SQLAlchemy deriving its cache key
    again, cost about as much as running it."""
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        stmt = _STATEMENTS[key] = build()
    return stmt


_STATEMENTS: dict[tuple, Any] = {}


async def _insert_many(conn: AsyncConnection, table, rows: list[dict]) -> None:
    """INSERT many rows of the hot tables (staged records and their keys, links, intents,
    audit). On SQLite the rows go to the driver as tuples, each value through the same
    conversion SQLAlchemy applies (its bind processor for the column's type) and a missing
    value taking the column's default: SQLAlchemy's own per-row parameter handling cost
    twice the insert itself. Elsewhere (PostgreSQL) a Core insert."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        await conn.execute(insert(table), rows)
        return
    key = (table.name, type(conn.dialect))        # one entry per table, not per engine
    plain = _PLAIN.get(key)
    if plain is None:
        cols = [c for c in table.columns if not (c.primary_key and c.autoincrement and
                                                  c.name == "id")]
        sql = (f"INSERT INTO {table.name} ({', '.join(c.name for c in cols)}) "
               f"VALUES ({', '.join('?' for _ in cols)})")
        plain = _PLAIN[key] = (sql, [(
            c.name, c.default.arg if c.default is not None and c.default.is_scalar else None,
            c.type.dialect_impl(conn.dialect).bind_processor(conn.dialect),
            isinstance(c.type, DateTime)) for c in cols])
    sql, cols = plain
    columns = []
    for name, default, proc, stamp in cols:     # column by column: a list comprehension
        values = [row.get(name, default) for row in rows]     # each, not a generator a value
        if proc is not None:
            values = _datetimes(proc, values) if stamp else [proc(v) for v in values]
        columns.append(values)
    # many rows a statement (``VALUES (...), (...)``), not one statement a row (executemany):
    # the driver lets go of the interpreter lock for each statement it steps, and takes it
    # back to bind the next; while the event loop's thread is busy, each taking back waits
    # for the lock's switch interval. A page of 500 rows went in at a few a millisecond.
    per = max(1, SQLITE_VARIABLES // len(cols))
    flat = [v for row in zip(*columns) for v in row]
    width = len(cols)
    for i in range(0, len(rows), per):
        n = min(per, len(rows) - i)
        await conn.exec_driver_sql(_values_sql(sql, width, n),
                                   tuple(flat[i * width:(i + n) * width]))


SQLITE_VARIABLES = 8_000    # bound values per statement (SQLite allows 32,766 since 3.32)


def _values_sql(sql: str, width: int, n: int) -> str:
    """``sql`` (an INSERT of one row of ``width`` values) for ``n`` rows."""
    key = (sql, n)
    text = _VALUES.get(key)
    if text is None:
        one = "(" + ", ".join("?" * width) + ")"
        text = _VALUES[key] = sql[:sql.rindex("VALUES") + 7] + ", ".join([one] * n)
        if len(_VALUES) > 256:          # the last, shorter statement of each size: bounded
            _VALUES.clear()
            _VALUES[key] = text
    return text


_VALUES: dict[tuple[str, int], str] = {}


def _datetimes(proc, values: list) -> list:
    """``proc`` applied to each datetime once per distinct value: a chunk's rows share their
    timestamps (a record's audit rows, for one), and turning a datetime into SQLite's text
    is the dearest conversion of an insert. Keyed by the value and its zone: two equal
    instants in two zones are written as two different texts."""
    memo: dict = {}
    out = []
    for v in values:
        key = None if v is None else (v, v.tzinfo)
        got = memo.get(key)
        if got is None:
            got = memo[key] = proc(v)
        out.append(got)
    return out


_PLAIN: dict[tuple[str, type], tuple[str, list]] = {}


def _chunks(seq: Sequence, n: int = CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


async def _delete_ids(conn: AsyncConnection, table, id_col: str, ids: Sequence,
                      *extra, **where) -> None:
    """DELETE the rows of ``table`` matching ``where`` whose ``id_col`` is one of ``ids``,
    one statement per chunk of ids (built once per shape when there is no ``extra``)."""
    ids = list(ids)
    if not ids:
        return
    d = conn.dialect.name
    if extra or any(v is None for v in where.values()):    # (IS NULL: not a parameter)
        cond = [table.c[k] == v for k, v in where.items()] + list(extra)
        for part in _chunks(ids):
            await conn.execute(delete(table).where(*cond, _among(conn, table.c[id_col], part)))
        return
    names = tuple(sorted(where))
    stmt = _built(("delete", table.name, id_col, names, d), lambda: delete(table).where(
        *[table.c[k] == bindparam(f"w_{k}") for k in names],
        _one_of(d, table.c[id_col], "ids")))
    params = {f"w_{k}": v for k, v in where.items()}
    for part in _chunks(ids):
        await conn.execute(stmt, {**params, "ids": _ids(d, part)})


# --- links ---------------------------------------------------------------------------------
async def links_by_side(conn: AsyncConnection, integration: str, flow: str, side: str,
                        ids: Sequence[str]) -> dict[str, dict]:
    col = links.c.left_id if side == "left" else links.c.right_id
    d = conn.dialect.name
    stmt = _built(("links_by_side", side, d), lambda: select(links).where(
        links.c.integration == bindparam("integration"), links.c.flow == bindparam("flow"),
        _one_of(d, col, "ids")))
    out: dict[str, dict] = {}
    for part in _chunks(list(ids)):
        rows = await conn.execute(stmt, {"integration": integration, "flow": flow,
                                         "ids": _ids(d, part)})
        for row in _dicts(rows):
            out[row["left_id" if side == "left" else "right_id"]] = row
    return out


async def link_digests(conn: AsyncConnection, integration: str, flow: str, side: str,
                       ids: Sequence[str]) -> dict[str, tuple[str, str, int]]:
    """The state, ``side``'s base digest and how many fields that base holds, of the links
    of ``ids`` (by ``side``'s id): what staging needs to tell a record that equals its base,
    without the bases themselves. (A digest takes a field the base lacks for an empty one;
    the count, kept with the base since revision 0008, tells them apart: -1 where unknown.)"""
    col = links.c.left_id if side == "left" else links.c.right_id
    digest = links.c.left_hash if side == "left" else links.c.right_hash
    d = conn.dialect.name
    held = func.coalesce(links.c.left_fields if side == "left" else links.c.right_fields, -1)

    def build():
        where = (links.c.integration == bindparam("integration"),
                 links.c.flow == bindparam("flow"), _one_of(d, col, "ids"))
        if d == "sqlite":   # one row: see ``_one_row``
            return select(func.json_group_array(func.json_array(
                col, links.c.state, digest, held))).where(*where)
        return select(col, links.c.state, digest, held).where(*where)
    stmt = _built(("link_digests", side, d), build)
    out: dict[str, tuple[str, str, int]] = {}
    for part in _chunks(list(ids)):
        rows = await conn.execute(stmt, {"integration": integration, "flow": flow,
                                         "ids": _ids(d, part)})
        got = _one_row(rows) if d == "sqlite" else rows
        out.update((r[0], (r[1], r[2], int(r[3]))) for r in got)
    return out


def _one_row(result) -> list:
    """The rows a SQLite statement gathered into one JSON array (``json_group_array``). The
    driver lets go of the interpreter lock for every row it steps and takes it back to hand
    the row over; while the event loop's thread is busy, each taking back waits for the
    lock's switch interval, so a query of 500 rows waited far longer than it ran. Gathered,
    it is one step."""
    return orjson.loads(result.scalar())


async def quiet_pairs(conn: AsyncConnection, run_id: int, integration: str, flow: str) -> int:
    """Links of the flow that the step staged on some side only as quiet (equal to its
    base: ``OUTSIDE_CHUNKS``; asked after staging, before any chunk is decided) and on no
    side as a record to decide: the pairs left unchanged without being planned.

    On SQLite, counted from the quiet rows (the staging-order index's range
    ``seq = OUTSIDE_CHUNKS``), each one's link found by its side's key and its partner's
    staged row by its key: the count costs what the quiet rows do, not what the flow's links
    do (an incremental step's few quiet rows would walk every link). A pair quiet on both
    sides is counted from the left. On PostgreSQL the same statement, planned on statistics
    older than the step's staging (a step below ``STATS_AFTER`` rows does not refresh
    them), nested the flow's links and the partner rows inside each quiet row: cubic, and
    a test of 1,234 pairs did not end. There the count walks the flow's links once, each
    side's staged row found by its key."""
    if conn.dialect.name != "sqlite":
        return await _quiet_pairs_by_links(conn, run_id, integration, flow)
    total = 0
    p = staged.alias("partner")
    for side, other in (("left", "right"), ("right", "left")):
        mine = links.c.left_id if side == "left" else links.c.right_id
        theirs = links.c.right_id if side == "left" else links.c.left_id
        partner = select(p.c.seq).where(               # by its key: no ``seq`` named here
            p.c.run_id == run_id, p.c.flow == flow, p.c.side == other,
            p.c.record_id == theirs).correlate(links).scalar_subquery()
        row = await conn.execute(
            select(func.count()).select_from(staged.join(links, and_(
                links.c.integration == integration, links.c.flow == flow,
                mine == staged.c.record_id))).where(
                staged.c.run_id == run_id, staged.c.flow == flow, staged.c.side == side,
                staged.c.seq == OUTSIDE_CHUNKS,
                func.coalesce(partner, OUTSIDE_CHUNKS) == OUTSIDE_CHUNKS if side == "left"
                else partner.is_(None)))
        total += int(row.scalar() or 0)
    return total


async def _quiet_pairs_by_links(conn: AsyncConnection, run_id: int, integration: str,
                                flow: str) -> int:
    """``quiet_pairs`` by the flow's links. Each side's staged row is found by its key (the
    subquery names no ``seq``, so the planner cannot take the staging-order index, whose
    ``seq = 0`` holds every quiet row: that made the count quadratic)."""
    def seq_of(side: str):
        col = links.c.left_id if side == "left" else links.c.right_id
        return select(staged.c.seq).where(
            staged.c.run_id == run_id, staged.c.flow == flow, staged.c.side == side,
            staged.c.record_id == col).scalar_subquery()
    left, right = seq_of("left"), seq_of("right")
    row = await conn.execute(select(func.count()).select_from(links).where(
        links.c.integration == integration, links.c.flow == flow,
        or_(left == OUTSIDE_CHUNKS, right == OUTSIDE_CHUNKS),
        func.coalesce(left, OUTSIDE_CHUNKS) == OUTSIDE_CHUNKS,
        func.coalesce(right, OUTSIDE_CHUNKS) == OUTSIDE_CHUNKS))
    return int(row.scalar() or 0)


async def link_map(conn: AsyncConnection, integration: str, flow: str, side: str,
                   ids: Sequence[str]) -> dict[str, str]:
    """Partner ids of live links (state ok), for translating reference fields."""
    src = links.c.left_id if side == "left" else links.c.right_id
    dst = links.c.right_id if side == "left" else links.c.left_id
    out: dict[str, str] = {}
    for part in _chunks(list(ids)):
        rows = await conn.execute(select(src, dst).where(
            links.c.integration == integration, links.c.flow == flow,
            links.c.state == "ok", _among(conn, src, part)))
        out.update({a: b for a, b in rows.all()})
    return out


async def insert_links(conn: AsyncConnection, rows: list[dict]) -> None:
    await _insert_many(conn, links, rows)


async def update_links(conn: AsyncConnection, rows: list[dict]) -> None:
    """Rows carry ``id`` and the columns to set; grouped by column set, one executemany each."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    for keys, group in groups.items():
        from sqlalchemy import bindparam
        stmt = update(links).where(links.c.id == bindparam("_id")).values(
            {k: bindparam(k) for k in keys if k != "id"})
        await conn.execute(stmt, [{**{k: r[k] for k in keys if k != "id"}, "_id": r["id"]}
                                  for r in group])


async def delete_links(conn: AsyncConnection, ids: Sequence[int]) -> None:
    await _delete_ids(conn, links, "id", ids)


async def count_links(conn: AsyncConnection, integration: str, flow: str) -> int:
    return (await conn.execute(select(func.count()).select_from(links).where(
        links.c.integration == integration, links.c.flow == flow))).scalar_one()


# --- cursors -------------------------------------------------------------------------------
async def get_cursor(conn: AsyncConnection, integration: str, flow: str, side: str) -> dict | None:
    row = (await conn.execute(select(cursors.c.value).where(
        cursors.c.integration == integration, cursors.c.flow == flow,
        cursors.c.side == side))).first()
    return loads(row[0]) if row else None


async def set_cursor(conn: AsyncConnection, integration: str, flow: str, side: str,
                     value: dict) -> None:
    key = dict(integration=integration, flow=flow, side=side)
    done = await conn.execute(update(cursors).where(
        *[cursors.c[k] == v for k, v in key.items()]).values(value=dumps(value),
                                                               updated_at=now()))
    if done.rowcount == 0:
        await conn.execute(insert(cursors).values(**key, value=dumps(value), updated_at=now()))


async def clear_cursors(conn: AsyncConnection, integration: str, flow: str | None = None) -> None:
    cond = [cursors.c.integration == integration]
    if flow:
        cond.append(cursors.c.flow == flow)
    await conn.execute(delete(cursors).where(*cond))


# --- staging -------------------------------------------------------------------------------
async def stage(conn: AsyncConnection, rows: list[dict], keys: list[dict],
                replace: Sequence[str] | None = None) -> None:
    """Insert a page; a record read twice in one step keeps its latest reading: the rows
    of ``replace`` (all of the page's ids when None) are deleted first."""
    if not rows:
        return
    first = rows[0]
    ids = [r["record_id"] for r in rows] if replace is None else list(replace)
    for part in _chunks(ids):
        base = [staged.c.run_id == first["run_id"], staged.c.flow == first["flow"],
                staged.c.side == first["side"]]
        await conn.execute(delete(staged).where(*base, _among(conn, staged.c.record_id, part)))
        kbase = [staged_keys.c.run_id == first["run_id"], staged_keys.c.flow == first["flow"],
                 staged_keys.c.side == first["side"]]
        await conn.execute(delete(staged_keys).where(
            *kbase, _among(conn, staged_keys.c.record_id, part)))
    await _insert_many(conn, staged, rows)
    await _insert_many(conn, staged_keys, keys)


STATS_AFTER = 5_000     # staged rows: below this, the planner's defaults choose well


async def refresh_statistics(conn: AsyncConnection, staged_rows: int) -> bool:
    """Bring the planner's statistics of the step's tables up to date after a large staging
    (a first sync: ``staged`` went from empty to many rows, ``links`` may be about to grow).
    Cheap by design: PostgreSQL's ANALYZE samples a fixed number of rows; SQLite's is bounded
    by ``analysis_limit``. Without it PostgreSQL may plan the chunk queries for the empty
    table the last autovacuum saw. Returns whether it ran."""
    if staged_rows < STATS_AFTER:
        return False
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("ANALYZE staged, staged_keys, links")
    elif conn.dialect.name == "sqlite":
        await conn.exec_driver_sql("PRAGMA analysis_limit = 1000")
        for table in ("staged", "staged_keys", "links"):
            await conn.exec_driver_sql(f"ANALYZE {table}")
    return True


async def clear_staged(conn: AsyncConnection, run_id: int | None = None,
                       flow: str | None = None) -> None:
    for table in (staged, staged_keys):
        cond = []
        if run_id is not None:
            cond.append(table.c.run_id == run_id)
        if flow is not None:
            cond.append(table.c.flow == flow)
        await conn.execute(delete(table).where(*cond))


async def clear_left_behind(conn: AsyncConnection, integration: str, flow: str,
                            run_id: int) -> None:
    """The staged rows of ``flow`` that earlier runs of ``integration`` left behind (a run
    stopped in the middle of a step). Flow names are not unique across integrations (two
    clients on one preset), so the rows of another integration's step under way are left
    alone. Each staged row is checked against its run: the staged table holds only the steps
    under way, while the runs table keeps every run."""
    runs = T["runs"]
    for table in (staged, staged_keys):
        await conn.execute(delete(table).where(
            table.c.flow == flow, table.c.run_id != run_id,
            select(literal_column("1")).select_from(runs).where(
                runs.c.id == table.c.run_id, runs.c.integration == integration).exists()))


async def unstage(conn: AsyncConnection, run_id: int, flow: str, side: str,
                  ids: Sequence[str]) -> None:
    """Records decided in a chunk: out of the step's chunks (``OUTSIDE_CHUNKS``), so no later
    chunk meets them again, but still staged: a record of the other side with the same key
    finds them as candidates (linked: a review), not nothing (a create: a duplicate)."""
    d = conn.dialect.name
    stmt = _built(("unstage", d), lambda: update(staged).where(
        staged.c.run_id == bindparam("r"), staged.c.flow == bindparam("f"),
        staged.c.side == bindparam("s"), _one_of(d, staged.c.record_id, "ids"))
        .values(seq=OUTSIDE_CHUNKS))
    for part in _chunks(list(ids)):
        await conn.execute(stmt, {"r": run_id, "f": flow, "s": side, "ids": _ids(d, part)})


async def drop_staged(conn: AsyncConnection, run_id: int, flow: str, side: str,
                      ids: Sequence[str]) -> None:
    """Records a chunk deleted (or marked deleted) in their system: no longer candidates."""
    await _delete_ids(conn, staged, "record_id", ids, run_id=run_id, flow=flow, side=side)


def _staged_row(row: dict) -> dict:
    """A staged row with its data decoded (``row`` is a plain dict, changed in place)."""
    row["data"] = loads(row["data"])
    return row


def decode_staged(row: dict) -> dict:
    """A row of ``staged_linked_chunk(..., raw=True)`` with its data decoded, in place; a
    row already decoded is left as it is."""
    return _staged_row(row) if isinstance(row["data"], (str, bytes)) else row


async def staged_records(conn: AsyncConnection, run_id: int, flow: str, side: str,
                         ids: Sequence[str]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for part in _chunks(list(ids)):
        rows = await conn.execute(*_staged_by_id(conn, run_id, flow, side, part))
        out.update({r["record_id"]: _staged_row(r) for r in _dicts(rows)})
    return out


def _staged_by_id(conn: AsyncConnection, run_id: int, flow: str, side: str,
                  ids: Sequence[str]) -> tuple[Any, dict]:
    """The statement selecting the staged rows of ``ids``, and its parameters."""
    d = conn.dialect.name
    stmt = _built(("staged_by_id", d), lambda: select(staged).where(
        staged.c.run_id == bindparam("run_id"), staged.c.flow == bindparam("flow"),
        staged.c.side == bindparam("side"), _one_of(d, staged.c.record_id, "ids")))
    return stmt, {"run_id": run_id, "flow": flow, "side": side, "ids": _ids(d, ids)}


async def staged_ids(conn: AsyncConnection, run_id: int, flow: str, side: str,
                     ids: Sequence[str]) -> set[str]:
    """Which of ``ids`` this step has staged on ``side``."""
    out: set[str] = set()
    for part in _chunks(list(ids)):
        rows = await conn.execute(select(staged.c.record_id).where(
            staged.c.run_id == run_id, staged.c.flow == flow, staged.c.side == side,
            _among(conn, staged.c.record_id, part)))
        out.update(r[0] for r in rows)
    return out


async def staged_outside(conn: AsyncConnection, run_id: int, flow: str, side: str,
                         after: str, limit: int) -> list[tuple[str, dict]]:
    """Up to ``limit`` staged records of ``side`` outside the chunks (``OUTSIDE_CHUNKS``:
    quiet, or decided), by id after ``after``: their ids and values."""
    rows = await conn.execute(
        select(staged.c.record_id, staged.c.data).where(
            staged.c.run_id == run_id, staged.c.flow == flow, staged.c.side == side,
            staged.c.record_id > after, staged.c.seq == OUTSIDE_CHUNKS)
        .order_by(staged.c.record_id).limit(limit))
    return [(r[0], loads(r[1])) for r in rows]


async def add_staged_keys(conn: AsyncConnection, keys: list[dict]) -> None:
    """Match keys of staged records; those already staged are kept as they are."""
    if not keys:
        return
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as upsert
    else:
        from sqlalchemy.dialects.postgresql import insert as upsert
    for part in _chunks(keys, 1000):
        await conn.execute(upsert(staged_keys).on_conflict_do_nothing(), list(part))


class Chunk(list):
    """One chunk of staged records, and ``last``: the staging order (``seq``) the chunk's
    window reached, where the next chunk starts; None when the side has no more rows. A
    window may hold no record of the kind asked for (an empty chunk that is not the end)."""
    last: int | None = None


async def _window(conn: AsyncConnection, run_id: int, flow: str, side: str, after_seq: int,
                  limit: int, deleted_only: bool = False) -> list[dict]:
    """The next ``limit`` staged rows of ``side`` after ``after_seq``: a range of the index
    ``ix_staged_order``, whatever the rest of the table holds. The chunk queries narrow this
    window in a second, batched query instead of joining first: a join lets the planner
    (PostgreSQL's, misjudging how many staged rows have a link) read every remaining row of
    the side and sort them, for every chunk."""
    extra = [staged.c.deleted.is_(True)] if deleted_only else []
    stmt = _built(("window", deleted_only), lambda: select(staged).where(
        staged.c.run_id == bindparam("run_id"), staged.c.flow == bindparam("flow"),
        staged.c.side == bindparam("side"), staged.c.seq > bindparam("after"),
        *extra).order_by(staged.c.seq).limit(bindparam("limit")))
    rows = await conn.execute(stmt, {"run_id": run_id, "flow": flow, "side": side,
                                     "after": after_seq, "limit": limit})
    return _dicts(rows)


async def staged_linked_chunk(conn: AsyncConnection, run_id: int, integration: str, flow: str,
                              side: str, after_seq: int, limit: int,
                              deleted_only: bool = False, raw: bool = False) -> Chunk:
    """The staged records of ``side`` that have a link in the next window of the staging
    order (after ``after_seq``), each with its link and the partner's staged record if there
    is one. Keyset on ``seq``: every call reads only its own window, so a step is linear in
    the number of staged records. ``deleted_only``: just the records staged as deleted (the
    circuit-breaker's count). ``raw``: the rows' data is left as JSON text, for the caller
    to decode where it needs the values (``decode_staged``)."""
    row_of = (lambda r: r) if raw else _staged_row
    window = await _window(conn, run_id, flow, side, after_seq, limit, deleted_only)
    out = Chunk()
    if not window:
        return out
    out.last = window[-1]["seq"]
    by_record = await links_by_side(conn, integration, flow, side,
                                    [r["record_id"] for r in window])
    other_side = "right" if side == "left" else "left"
    partner_ids: dict[str, dict] = {}
    for r in window:
        link = by_record.get(r["record_id"])
        if link is None:
            continue
        unit = {"link": link, side: row_of(r), other_side: None, "seq": r["seq"]}
        out.append(unit)
        partner_ids[link[f"{other_side}_id"]] = unit
    for part in _chunks(list(partner_ids)):
        found = await conn.execute(*_staged_by_id(conn, run_id, flow, other_side, part))
        for row in _dicts(found):
            partner_ids[row["record_id"]][other_side] = row_of(row)
    return out


async def staged_unlinked_chunk(conn: AsyncConnection, run_id: int, integration: str,
                                flow: str, side: str, after_seq: int, limit: int) -> Chunk:
    """The staged records of ``side`` without a link in the next window of the staging
    order (see ``staged_linked_chunk``)."""
    window = await _window(conn, run_id, flow, side, after_seq, limit)
    out = Chunk()
    if not window:
        return out
    out.last = window[-1]["seq"]
    col = links.c.left_id if side == "left" else links.c.right_id
    linked = set((await conn.execute(select(col).where(
        links.c.integration == integration, links.c.flow == flow,
        _among(conn, col, [r["record_id"] for r in window])))).scalars())
    out.extend(_staged_row(r) for r in window if r["record_id"] not in linked)
    return out


async def staged_by_key(conn: AsyncConnection, run_id: int, flow: str, side: str, key: str,
                        values: Sequence[str]) -> dict[str, list[dict]]:
    """Staged records of ``side`` whose normalised key ``key`` is one of ``values``."""
    out: dict[str, list[dict]] = {}
    for part in _chunks(list(set(values))):
        rows = await conn.execute(
            select(staged_keys.c.value, staged).join(staged, and_(
                staged.c.run_id == staged_keys.c.run_id, staged.c.flow == staged_keys.c.flow,
                staged.c.side == staged_keys.c.side,
                staged.c.record_id == staged_keys.c.record_id)).where(
                staged_keys.c.run_id == run_id, staged_keys.c.flow == flow,
                staged_keys.c.side == side, staged_keys.c.key == key,
                _among(conn, staged_keys.c.value, part)).order_by(staged.c.seq,
                                                                  staged.c.record_id))
        for row in _dicts(rows):
            value = row.pop("value")
            out.setdefault(value, []).append(_staged_row(row))
    return out


async def unseen_links(conn: AsyncConnection, run_id: int, integration: str, flow: str,
                       side: str, limit: int, after: int) -> list[dict]:
    """Live links whose ``side`` record was not in a complete listing: deleted there."""
    col = links.c.left_id if side == "left" else links.c.right_id
    seen = select(staged.c.record_id).where(
        staged.c.run_id == run_id, staged.c.flow == flow, staged.c.side == side,
        staged.c.record_id == col).exists()
    rows = await conn.execute(select(links).where(
        links.c.integration == integration, links.c.flow == flow, links.c.id > after,
        links.c.state == "ok", ~seen).order_by(links.c.id).limit(limit))
    return [dict(r) for r in rows.mappings()]


# --- intents, errors, exclusions, reviews, pushes, holds, audit ----------------------------
async def add_intents(conn: AsyncConnection, rows: list[dict]) -> None:
    await _insert_many(conn, intents, rows)


async def drop_intents(conn: AsyncConnection, integration: str, flow: str, target: str,
                       source_ids: Sequence[str]) -> None:
    await _delete_ids(conn, intents, "source_id", source_ids, integration=integration,
                      flow=flow, target=target)


async def pending_intents(conn: AsyncConnection, integration: str, flow: str) -> list[dict]:
    rows = await conn.execute(select(intents).where(
        intents.c.integration == integration, intents.c.flow == flow)
        .order_by(intents.c.target, intents.c.source_id))
    return [{**r, "keys": loads(r["keys"])} for r in rows.mappings()]


async def record_errors(conn: AsyncConnection, rows: list[dict],
                        quarantine_after: int | None = None) -> None:
    """Upsert record errors. ``count`` is how many runs in a row the record failed the same
    way (the same message); at ``quarantine_after`` a retried error is quarantined: no longer
    read again every run, until the record changes (its hash moves) or ``accord retry``."""
    for row in rows:
        key = [errors.c[k] == row[k] for k in ("integration", "flow", "side", "record_id")]
        old = (await conn.execute(select(errors.c.message, errors.c.count, errors.c.run_id)
                                  .where(*key))).first()
        if old is None:
            await conn.execute(insert(errors).values(**row, count=1, quarantined=False))
            continue
        if old.run_id == row["run_id"]:
            count = old.count                    # a second error of the same run
        else:
            count = old.count + 1 if old.message == row["message"] else 1
        quarantined = bool(row["retry"] and quarantine_after and count >= quarantine_after)
        await conn.execute(update(errors).where(*key).values(
            message=row["message"], retry=row["retry"], run_id=row["run_id"],
            updated_at=row["updated_at"], count=count, quarantined=quarantined,
            hash=row.get("hash")))


async def quarantined(conn: AsyncConnection, integration: str, flow: str, side: str,
                      ids: Sequence[str]) -> dict[str, str | None]:
    """The quarantined records among ``ids``, with the hash they had when they failed."""
    out: dict[str, str | None] = {}
    for part in _chunks(list(ids)):
        rows = await conn.execute(select(errors.c.record_id, errors.c.hash).where(
            errors.c.integration == integration, errors.c.flow == flow,
            errors.c.side == side, errors.c.quarantined.is_(True),
            _among(conn, errors.c.record_id, part)))
        out.update(dict(rows.all()))
    return out


async def clear_errors(conn: AsyncConnection, integration: str, flow: str, side: str,
                       ids: Sequence[str], only_retry: bool = False) -> None:
    extra = [errors.c.retry.is_(True)] if only_retry else []
    await _delete_ids(conn, errors, "record_id", ids, *extra, integration=integration,
                      flow=flow, side=side)


async def revisit_ids(conn: AsyncConnection, integration: str, flow: str, side: str) -> list[str]:
    """Records to read again by id: failed writes, exclusions that were lifted, and records
    an answer left a field out of (``add_rereads``). One statement (every step of every run
    asks it, for each side), built once."""
    def of(table, *extra):
        return select(table.c.record_id).where(
            table.c.integration == bindparam("integration"), table.c.flow == bindparam("flow"),
            table.c.side == bindparam("side"), *extra)
    stmt = _built(("revisit_ids",), lambda: union(
        of(errors, errors.c.retry.is_(True), errors.c.quarantined.is_(False)),
        of(exclusions, exclusions.c.mode == "revisit"), of(rereads)))
    rows = await conn.execute(stmt, {"integration": integration, "flow": flow, "side": side})
    return sorted({r[0] for r in rows})


async def add_rereads(conn: AsyncConnection, integration: str, flow: str,
                      records: Iterable[tuple[str, str]]) -> None:
    """(side, record id) to read again by id in the next run of the flow."""
    rows = [dict(integration=integration, flow=flow, side=side, record_id=rid,
                 created_at=now()) for side, rid in sorted(set(records))]
    for side in ("left", "right"):
        await _delete_ids(conn, rereads, "record_id",
                          [r["record_id"] for r in rows if r["side"] == side],
                          integration=integration, flow=flow, side=side)
    if rows:
        await conn.execute(insert(rereads), rows)


async def drop_rereads(conn: AsyncConnection, integration: str, flow: str, side: str,
                       ids: Sequence[str]) -> None:
    await _delete_ids(conn, rereads, "record_id", ids, integration=integration, flow=flow,
                      side=side)


async def excluded(conn: AsyncConnection, integration: str, flow: str, side: str,
                   ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in _chunks(list(ids)):
        rows = await conn.execute(select(exclusions.c.record_id, exclusions.c.mode).where(
            exclusions.c.integration == integration, exclusions.c.flow == flow,
            exclusions.c.side == side, _among(conn, exclusions.c.record_id, part),
            exclusions.c.mode.in_(("never", "skip_once"))))
        out.update(dict(rows.all()))
    return out


RECORD_STATE = ("errors", "quarantined", "reviews", "parked", "exclusions")


async def record_state(conn: AsyncConnection, integration: str, flow: str) -> set[str]:
    """Which per-record tables hold rows for the flow (of RECORD_STATE: record errors, the
    quarantined ones among them, reviews, parked records, exclusions that leave a record
    out): one statement, each an EXISTS on the table's key."""
    def there(table, *extra):
        return select(literal_column("1")).select_from(table).where(
            table.c.integration == bindparam("integration"),
            table.c.flow == bindparam("flow"), *extra).exists()
    stmt = _built(("record_state",), lambda: select(
        there(errors), there(errors, errors.c.quarantined.is_(True)), there(reviews),
        there(parked), there(exclusions, exclusions.c.mode.in_(("never", "skip_once")))))
    row = (await conn.execute(stmt, {"integration": integration, "flow": flow})).one()
    return {kind for kind, present in zip(RECORD_STATE, row) if present}


async def after_step_exclusions(conn: AsyncConnection, integration: str, flow: str) -> None:
    """skip_once has been spent: the record is read again by id next run."""
    base = [exclusions.c.integration == integration, exclusions.c.flow == flow]
    await conn.execute(delete(exclusions).where(*base, exclusions.c.mode == "revisit"))
    await conn.execute(update(exclusions).where(*base, exclusions.c.mode == "skip_once")
                       .values(mode="revisit"))


async def set_reviews(conn: AsyncConnection, rows: list[dict]) -> None:
    for row in rows:
        key = [reviews.c[k] == row[k] for k in ("integration", "flow", "side", "record_id")]
        await conn.execute(delete(reviews).where(*key))
    if rows:
        await conn.execute(insert(reviews), rows)


async def reviews_naming(conn: AsyncConnection, integration: str, flow: str,
                         ids: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(side, record_id) of the flow's reviews whose candidates (records of the other side)
    name one of that side's ``ids`` ({side: ids}). Read through the flow's reviews a page at
    a time (they are few: each waits for a person)."""
    facing = {"left": ids.get("right", set()), "right": ids.get("left", set())}
    out: list[tuple[str, str]] = []
    after: tuple[str, str] = ("", "")
    while True:
        rows = (await conn.execute(
            select(reviews.c.side, reviews.c.record_id, reviews.c.candidates).where(
                reviews.c.integration == integration, reviews.c.flow == flow,
                tuple_(reviews.c.side, reviews.c.record_id) > after)
            .order_by(reviews.c.side, reviews.c.record_id).limit(CHUNK))).all()
        if not rows:
            return out
        out += [(side, rid) for side, rid, cands in rows
                if facing.get(side, set()).intersection(loads(cands) or ())]
        after = (rows[-1][0], rows[-1][1])


async def clear_reviews(conn: AsyncConnection, integration: str, flow: str, side: str,
                        ids: Sequence[str]) -> None:
    await _delete_ids(conn, reviews, "record_id", ids, integration=integration, flow=flow,
                      side=side)


async def take_pushes(conn: AsyncConnection, integration: str, flow: str, side: str) -> list[str]:
    rows = await conn.execute(select(pushes.c.record_id).where(
        pushes.c.integration == integration, pushes.c.flow == flow, pushes.c.side == side)
        .order_by(pushes.c.record_id))
    return [r[0] for r in rows]


async def drop_pushes(conn: AsyncConnection, integration: str, flow: str, side: str,
                      ids: Sequence[str]) -> None:
    await _delete_ids(conn, pushes, "record_id", ids, integration=integration, flow=flow,
                      side=side)


async def hold(conn: AsyncConnection, rows: list[dict]) -> int:
    """Add held deletes not already held; returns how many are new."""
    new = 0
    for row in rows:
        exists = (await conn.execute(select(held.c.id).where(
            held.c.integration == row["integration"], held.c.flow == row["flow"],
            held.c.link_id == row["link_id"]))).first()
        if not exists:
            await conn.execute(insert(held).values(**row))
            new += 1
    return new


async def approved_holds(conn: AsyncConnection, integration: str, flow: str) -> list[dict]:
    rows = await conn.execute(select(held).where(
        held.c.integration == integration, held.c.flow == flow, held.c.approved.is_(True))
        .order_by(held.c.id))
    return [dict(r) for r in rows.mappings()]


async def held_links(conn: AsyncConnection, integration: str, flow: str) -> dict[int, dict]:
    rows = await conn.execute(select(held).where(
        held.c.integration == integration, held.c.flow == flow))
    return {r["link_id"]: dict(r) for r in rows.mappings()}


async def drop_holds(conn: AsyncConnection, ids: Sequence[int]) -> None:
    await _delete_ids(conn, held, "id", ids)


async def add_audit(conn: AsyncConnection, rows: list[dict]) -> None:
    """Audit rows, their old and new values already JSON text."""
    await _insert_many(conn, audit, rows)


async def links_by_id(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for part in _chunks(list(ids)):
        rows = await conn.execute(select(links).where(_among(conn, links.c.id, part)))
        out.update({r["id"]: dict(r) for r in rows.mappings()})
    return out


async def links_of(conn: AsyncConnection, integration: str, flow: str, after: int,
                   limit: int) -> list[dict]:
    rows = await conn.execute(select(links).where(
        links.c.integration == integration, links.c.flow == flow, links.c.id > after)
        .order_by(links.c.id).limit(limit))
    return [dict(r) for r in rows.mappings()]


def decode_base(link: dict, side: str) -> dict[str, Any]:
    return loads(link[f"{side}_base"]) or {}


async def parked_hashes(conn: AsyncConnection, integration: str, flow: str, side: str,
                        ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in _chunks(list(ids)):
        rows = await conn.execute(select(parked.c.record_id, parked.c.hash).where(
            parked.c.integration == integration, parked.c.flow == flow,
            parked.c.side == side, _among(conn, parked.c.record_id, part)))
        out.update(dict(rows.all()))
    return out


async def park(conn: AsyncConnection, integration: str, flow: str, side: str,
               rows: list[tuple[str, str]]) -> None:
    if not rows:
        return
    await unpark(conn, integration, flow, side, [r for r, _ in rows])
    await conn.execute(insert(parked), [
        dict(integration=integration, flow=flow, side=side, record_id=r, hash=h,
             updated_at=now()) for r, h in rows])


async def unpark(conn: AsyncConnection, integration: str, flow: str, side: str,
                 ids: Sequence[str]) -> None:
    await _delete_ids(conn, parked, "record_id", ids, integration=integration, flow=flow,
                      side=side)


async def derived_ids(conn: AsyncConnection, integration: str, flow: str, side: str,
                      parents: Sequence[str]) -> list[str]:
    """Linked ``side`` ids of derived records whose parent is one of ``parents`` (ids of the
    form ``<parent>/<...>``), by id range, so an index serves it and no LIKE wildcard in an id
    can widen it ("0" is the character after "/")."""
    col = links.c.left_id if side == "left" else links.c.right_id
    out: list[str] = []
    for part in _chunks(list(parents), 100):
        rows = await conn.execute(select(col).where(
            links.c.integration == integration, links.c.flow == flow,
            or_(*[and_(col >= f"{p}/", col < f"{p}0") for p in part])).order_by(col))
        out.extend(r[0] for r in rows)
    return out
