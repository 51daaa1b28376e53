"""The SData ``where=`` query parameter of the Sage CRM sandbox: a small recursive-descent
parser (never ``eval``) for the operators the REST API documents: ``eq ne gt ge lt le``,
``like`` (``%`` wildcard), ``between x and y``, ``in (...)``, ``and``, ``or``, ``not`` and
parentheses. Grammar::

    expr     := and_expr ("or" and_expr)*
    and_expr := unary ("and" unary)*
    unary    := "not" unary | "(" expr ")" | compare
    compare  := name ( op literal | "like" literal | "between" literal "and" literal
                     | "in" "(" literal ("," literal)* ")" )
    literal  := 'text' ('' escapes a quote) | number | @2024-05-01@ | @2024-05-01T10:00:00@

Keywords and field names are case-insensitive; text compares case-insensitively (SQL Server's
default collation). A text literal compared with a date field is read as an ISO 8601 date-time
(``'2024-05-01T10:00:00'``, with or without a zone; without one it is UTC: the sandbox's choice,
the REST date literal is not documented). ``null``, ``true`` and ``false`` are refused: "the
REST API does not allow searching for null values nor Booleans". A comparison with a missing
(NULL) value is false. Any error raises :class:`WhereError` (answered 400).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

OPS = {"eq", "ne", "gt", "ge", "lt", "le"}
_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<date>@[^@]*@)|"
                    r"(?P<num>-?\d+(?:\.\d+)?)(?![\w])|(?P<name>[A-Za-z_][\w.]*)|"
                    r"(?P<punct>[(),]))")


class WhereError(ValueError):
    pass


@dataclass(frozen=True)
class Cmp:
    field: str
    op: str                     # eq ne gt ge lt le like between in
    values: tuple


@dataclass(frozen=True)
class Bool:
    op: str                     # and or not
    parts: tuple


def _tokens(text: str) -> list[tuple[str, Any]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise WhereError(f"cannot read the where clause at {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        raw = m.group(kind)
        if kind == "str":
            out.append(("lit", raw[1:-1].replace("''", "'")))
        elif kind == "date":
            out.append(("lit", _datetime(raw[1:-1])))
        elif kind == "num":
            out.append(("lit", float(raw) if "." in raw else int(raw)))
        elif kind == "name":
            out.append(("name", raw))
        else:
            out.append(("punct", raw))
    return out


def _datetime(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise WhereError(f"{text!r} is not a date") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek_word(self, word: str) -> bool:
        return (self.i < len(self.toks) and self.toks[self.i][0] == "name"
                and self.toks[self.i][1].lower() == word)

    def take(self, kind: str, value: str | None = None) -> Any:
        if self.i >= len(self.toks):
            raise WhereError("the where clause ends too early")
        k, v = self.toks[self.i]
        if k != kind or (value is not None and str(v).lower() != value):
            raise WhereError(f"expected {value or kind}, found {v!r}")
        self.i += 1
        return v

    def expr(self):
        parts = [self.and_expr()]
        while self.peek_word("or"):
            self.i += 1
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else Bool("or", tuple(parts))

    def and_expr(self):
        parts = [self.unary()]
        while self.peek_word("and"):
            self.i += 1
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else Bool("and", tuple(parts))

    def unary(self):
        if self.peek_word("not"):
            self.i += 1
            return Bool("not", (self.unary(),))
        if self.i < len(self.toks) and self.toks[self.i] == ("punct", "("):
            self.i += 1
            inner = self.expr()
            self.take("punct", ")")
            return inner
        return self.compare()

    def literal(self) -> Any:
        if self.i < len(self.toks) and self.toks[self.i][0] == "name" and \
                self.toks[self.i][1].lower() in ("null", "true", "false"):
            raise WhereError("the REST API does not search for null values nor Booleans")
        return self.take("lit")

    def compare(self) -> Cmp:
        name = self.take("name").lower()
        op = self.take("name").lower()
        if op in OPS or op == "like":
            return Cmp(name, op, (self.literal(),))
        if op == "between":
            low = self.literal()
            self.take("name", "and")
            return Cmp(name, op, (low, self.literal()))
        if op == "in":
            self.take("punct", "(")
            values = [self.literal()]
            while self.i < len(self.toks) and self.toks[self.i] == ("punct", ","):
                self.i += 1
                values.append(self.literal())
            self.take("punct", ")")
            return Cmp(name, op, tuple(values))
        raise WhereError(f"unknown operator {op!r}")


def parse(text: str):
    p = _Parser(text)
    node = p.expr()
    if p.i != len(p.toks):
        raise WhereError(f"unexpected {p.toks[p.i][1]!r} in the where clause")
    return node


def _coerce(value: Any, lit: Any) -> tuple[Any, Any]:
    if isinstance(value, datetime):
        if isinstance(lit, str):
            lit = _datetime(lit)
        return value, lit
    if isinstance(value, str) and isinstance(lit, str):
        return value.casefold(), lit.casefold()
    if isinstance(value, str) and isinstance(lit, (int, float)):
        try:
            return float(value), lit
        except ValueError:
            return value, str(lit)
    if isinstance(value, (int, float)) and isinstance(lit, str):
        try:
            return value, float(lit)
        except ValueError:
            return str(value), lit
    return value, lit


def _like(pattern: str) -> re.Pattern:
    return re.compile("".join(".*" if ch == "%" else re.escape(ch) for ch in pattern),
                      re.IGNORECASE | re.DOTALL)


def compile_where(node, known: set[str]) -> Callable[[dict], bool]:
    """A predicate over a record (lower-case field names); an unknown field is an error."""
    if isinstance(node, Bool):
        parts = [compile_where(p, known) for p in node.parts]
        if node.op == "and":
            return lambda r: all(p(r) for p in parts)
        if node.op == "or":
            return lambda r: any(p(r) for p in parts)
        return lambda r: not parts[0](r)
    if node.field not in known:
        raise WhereError(f"unknown field {node.field!r}")
    f, op, values = node.field, node.op, node.values
    if op == "like":
        rx = _like(str(values[0]))
        return lambda r: r.get(f) is not None and rx.fullmatch(str(r[f])) is not None

    def test(r: dict) -> bool:
        v = r.get(f)
        if v is None:
            return False
        try:
            if op == "in":
                return any(a == b for a, b in (_coerce(v, x) for x in values))
            if op == "between":
                a, lo = _coerce(v, values[0])
                _, hi = _coerce(v, values[1])
                return lo <= a <= hi
            a, b = _coerce(v, values[0])
            return {"eq": a == b, "ne": a != b}.get(op) if op in ("eq", "ne") else \
                {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op]
        except TypeError:
            raise WhereError(f"{f} cannot be compared with {values[0]!r}") from None
    return test


def parse_order(text: str, known: set[str]) -> list[tuple[str, bool]]:
    """``orderBy=comp_updateddate asc, comp_companyid`` -> [(field, descending)]."""
    out = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or (len(words) == 2 and
                                           words[1].lower() not in ("asc", "desc")):
            raise WhereError(f"cannot read orderBy {text!r}")
        name = words[0].lower()
        if name not in known:
            raise WhereError(f"unknown field {name!r} in orderBy")
        out.append((name, len(words) == 2 and words[1].lower() == "desc"))
    return out
