"""SQLite through aiosqlite with one trip to its thread per statement.

aiosqlite runs SQLite in a thread of its own and every call on it is a trip there and back:
a queue put, the thread woken, the answer handed back to the event loop through its
self-pipe. SQLAlchemy's aiosqlite adapter makes four such trips for a SELECT (open a cursor,
execute, fetch all, close) and three for any other statement. Here the cursor executes the
statement and fetches its rows in one function run on that thread: one trip. An idle run
makes about fifty small statements, where the trips cost more than SQLite's own work.

What the cursor holds afterwards is what the adapter's own cursor holds (description, rows,
rowcount, lastrowid); its errors are raised the same way. It uses ``Connection._execute``,
aiosqlite's own way to run a function on its thread, as SQLAlchemy's adapter does to set the
isolation level."""
from __future__ import annotations

from collections import deque
from typing import Any

import aiosqlite
import sqlite3
from sqlalchemy.dialects.sqlite.aiosqlite import (AsyncAdapt_aiosqlite_connection,
                                                  AsyncAdapt_aiosqlite_cursor,
                                                  AsyncAdapt_aiosqlite_dbapi)


def _statement(connection: aiosqlite.Connection, operation: str, parameters: Any,
               many: bool) -> tuple:
    """On aiosqlite's thread: run one statement, and read its rows if it returns any."""
    cursor = connection._conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.lastrowid, cursor.rowcount
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()

    def _run(self, operation: str, parameters: Any, many: bool) -> None:
        try:
            description, rows, lastrowid, rowcount = self.await_(self._connection._execute(
                _statement, self._connection, operation, parameters, many))
        except Exception as error:
            self._adapt_connection._handle_exception(error)
        if description:
            self.description = description
            self.lastrowid = self.rowcount = -1
            self._rows = deque(rows)
        else:
            self.description = None
            self.lastrowid, self.rowcount = lastrowid, rowcount

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        self._run(operation, parameters, False)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        self._run(operation, seq_of_parameters, True)
        self.description = None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    def cursor(self, server_side: bool = False) -> AsyncAdapt_aiosqlite_cursor:
        if server_side:
            return super().cursor(server_side=True)
        return OneTripCursor(self)


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI of SQLAlchemy, its connections making one trip a statement."""

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        adapted = super().connect(*arg, **kw)
        if type(adapted) is not AsyncAdapt_aiosqlite_connection:
            return adapted                  # the sync fallback: left as it is
        return OneTripConnection(self, adapted._connection)


def dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)
