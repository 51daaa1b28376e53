"""What a sandbox that is a generated database file shares (Sage 50 FR, Sage BOB 50).

The file is the vendor's database as the SQL connector reads it: ``url`` (a ``sqlite:///``
URL) is what the daemon hands to the connector's ``url`` setting (``url_setting``). A
subclass gives the ``SCHEMA``, the ``TABLES`` (entity -> (table, key column)), the ``ZONE``
its users' times are kept in, the ``COMPANY`` name of its company file, and the data
(``seed``, ``touch``, ``new_key``). The helpers act as a user of the vendor's program would:
they stamp ``MODIFIED_AT`` (and ``CREATED_AT``) in the vendor's own local time.

The company file's ``FILE_ID`` is random, made once per file: a regenerated file is another
instance (``instance_id``), whatever the seed.
"""
from __future__ import annotations

import random
import sqlite3
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from connectors.sandbox import Clock

TS = "%Y-%m-%d %H:%M:%S.%f"        # SQLAlchemy's text format of a datetime


class DatabaseFileSandbox:
    url_setting = "url"        # the connector setting the daemon points at this sandbox
    store_suffix = ".sqlite"   # the demo keeps the generated file (``path``) next to its state
    SCHEMA: str = ""
    TABLES: dict[str, tuple[str, str]] = {}
    ZONE: ZoneInfo = ZoneInfo("UTC")
    COMPANY = "Sandbox"

    def __init__(self, *, seed: int, records: int, clock: Clock | None,
                 path: str | Path | None) -> None:
        self.clock = clock or Clock()
        self.rng = random.Random(seed)
        self.records = records
        self._tmp: tempfile.TemporaryDirectory | None = None
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix=f"accord-{self.system}-")
            path = Path(self._tmp.name) / f"{self.system}.sqlite"
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    system = "sql"

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self, port: int = 0) -> str:
        new = not self.path.exists()
        self._db()
        if new and self.records > 0:
            self.seed(self.records, self.rng)
        return self.url

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    async def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(self.SCHEMA)
            self.prepare(conn)
            # the instance: random, not from the seed, made once per file
            conn.execute("INSERT INTO COMPANY_FILE (FILE_ID, NAME) SELECT ?, ? WHERE NOT EXISTS "
                         "(SELECT 1 FROM COMPANY_FILE)", (str(uuid.uuid4()), self.COMPANY))
            self._conn = conn
        return self._conn

    def prepare(self, conn: sqlite3.Connection) -> None:
        """Reference rows a new file needs besides its schema (none by default)."""

    @property
    def instance_id(self) -> str:
        """The company file's FILE_ID: made with the file, so a new file is a new instance."""
        return self._db().execute("SELECT FILE_ID FROM COMPANY_FILE").fetchone()[0]

    def stamp(self, when: datetime | None = None) -> str:
        """A time as the database keeps it: naive local time, SQLAlchemy's text format."""
        when = when or self.clock.now()
        return when.astimezone(self.ZONE).replace(tzinfo=None).strftime(TS)

    # --- for subclasses ------------------------------------------------------------------
    def seed(self, n: int, rng: random.Random) -> None:
        raise NotImplementedError

    def new_key(self, entity: str, cols: dict[str, Any], now: str) -> None:
        """Fill what a new row of ``entity`` gets from the program (its code, its type)."""

    # --- helpers, as a user of the vendor's program ---------------------------------------
    def insert(self, entity: str, **cols: Any) -> dict:
        table, key = self.TABLES[entity]
        now = self.stamp()
        cols.setdefault("MODIFIED_AT", now)
        self.new_key(entity, cols, now)
        names = list(cols)
        cur = self._db().execute(f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                                 f"({', '.join('?' * len(names))})", [cols[n] for n in names])
        return self.row(entity, cols.get(key, cur.lastrowid))   # type: ignore[return-value]

    def update(self, entity: str, key: Any, **cols: Any) -> None:
        table, keycol = self.TABLES[entity]
        cols.setdefault("MODIFIED_AT", self.stamp())
        sets = ", ".join(f"{n} = ?" for n in cols)
        cur = self._db().execute(f"UPDATE {table} SET {sets} WHERE {keycol} = ?",
                                 [*cols.values(), key])
        if cur.rowcount == 0:
            raise KeyError(f"{entity} {key} does not exist")

    def delete(self, entity: str, key: Any) -> None:
        table, keycol = self.TABLES[entity]
        if self._db().execute(f"DELETE FROM {table} WHERE {keycol} = ?", (key,)).rowcount == 0:
            raise KeyError(f"{entity} {key} does not exist")

    def row(self, entity: str, key: Any) -> dict | None:
        table, keycol = self.TABLES[entity]
        found = self._db().execute(f"SELECT * FROM {table} WHERE {keycol} = ?",
                                   (key,)).fetchone()
        return dict(found) if found else None

    def rows(self, entity: str) -> list[dict]:
        table, keycol = self.TABLES[entity]
        return [dict(r) for r in self._db().execute(f"SELECT * FROM {table} ORDER BY {keycol}")]

    def count(self, entity: str) -> int:
        return self._db().execute(f"SELECT count(*) FROM {self.TABLES[entity][0]}").fetchone()[0]
