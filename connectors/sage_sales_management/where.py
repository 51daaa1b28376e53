"""The SQL-like ``where`` and ``order`` query parameters of the Sage Sales Management sandbox.

A small recursive-descent parser (never ``eval``) for the subset the API documents
(``=``, ``>``, ``LIKE``, ``AND``, ``OR``) plus what an integration needs and SQL Server
(the vendor's database) accepts: ``>=``, ``<``, ``<=``, ``<>``/``!=``, ``NOT``, ``IN (...)``,
``IS [NOT] NULL``, ``NOT LIKE``, parentheses and ``COALESCE(a, b, ...)``. Grammar::

    expr     := and_expr ("OR" and_expr)*
    and_expr := not_expr ("AND" not_expr)*
    not_expr := "NOT" not_expr | "(" expr ")" | compare
    compare  := operand ( op operand | ["NOT"] "IN" "(" literal ("," literal)* ")"
                        | "IS" ["NOT"] "NULL" | ["NOT"] "LIKE" operand )
    operand  := name | literal | "COALESCE" "(" operand ("," operand)* ")"
    literal  := 'text' ('' escapes a quote) | "text" | number | TRUE | FALSE | NULL

Keywords are case-insensitive. Text comparisons are case-insensitive (SQL Server's default
collation). A comparison with NULL is false. Text literals compared with a date-time field
are read as ISO 8601 date-times (``2024-05-01T10:00:00.000Z`` or ``2024-05-01 10:00:00``).
Any error raises :class:`WhereError` (the sandbox answers 400 with FM error 901).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

MAX = sys.maxsize


class WhereError(ValueError):
    pass


# --- AST ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class Lit:
    value: Any


@dataclass(frozen=True)
class Coalesce:
    args: tuple


@dataclass(frozen=True)
class Cmp:
    left: Any
    op: str            # = <> > >= < <= LIKE NOTLIKE IN NOTIN ISNULL NOTNULL
    right: Any = None


@dataclass(frozen=True)
class And:
    left: Any
    right: Any


@dataclass(frozen=True)
class Or:
    left: Any
    right: Any


@dataclass(frozen=True)
class Not:
    inner: Any


# --- tokens ------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<str>'(?:[^']|'')*'|"(?:[^"]|"")*")
    | (?P<num>-?\d+(?:\.\d+)?(?![\w.]))
    | (?P<op><>|!=|>=|<=|=|>|<)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""", re.VERBOSE)
_KEYWORDS = {"AND", "OR", "NOT", "IN", "IS", "NULL", "LIKE", "TRUE", "FALSE", "COALESCE"}


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise WhereError(f"unexpected character {text[pos:].lstrip()[:1]!r} at "
                             f"position {pos}")
        pos = m.end()
        kind = m.lastgroup
        raw = m.group(kind)
        if kind == "str":
            q = raw[0]
            out.append(("lit", raw[1:-1].replace(q + q, q)))
        elif kind == "num":
            out.append(("lit", float(raw) if "." in raw else int(raw)))
        elif kind == "word" and raw.upper() in _KEYWORDS:
            out.append(("kw", raw.upper()))
        else:
            out.append((kind, raw))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        if not text or not text.strip():
            raise WhereError("empty expression")
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, kind: str, value: Any = None) -> bool:
        if self.i >= len(self.toks):
            return False
        k, v = self.toks[self.i]
        return k == kind and (value is None or v == value)

    def take(self, kind: str, value: Any = None) -> Any:
        if not self.peek(kind, value):
            got = self.toks[self.i][1] if self.i < len(self.toks) else "end of input"
            raise WhereError(f"expected {value or kind}, got {got!r}")
        self.i += 1
        return self.toks[self.i - 1][1]

    def done(self) -> None:
        if self.i != len(self.toks):
            raise WhereError(f"unexpected {self.toks[self.i][1]!r}")

    def expr(self):
        node = self.and_expr()
        while self.peek("kw", "OR"):
            self.i += 1
            node = Or(node, self.and_expr())
        return node

    def and_expr(self):
        node = self.not_expr()
        while self.peek("kw", "AND"):
            self.i += 1
            node = And(node, self.not_expr())
        return node

    def not_expr(self):
        if self.peek("kw", "NOT"):
            self.i += 1
            return Not(self.not_expr())
        if self.peek("punct", "("):
            self.i += 1
            node = self.expr()
            self.take("punct", ")")
            return node
        return self.compare()

    def compare(self):
        left = self.operand()
        if self.peek("op"):
            op = self.take("op")
            return Cmp(left, "<>" if op == "!=" else op, self.operand())
        negate = False
        if self.peek("kw", "NOT"):
            self.i += 1
            negate = True
        if self.peek("kw", "IN"):
            self.i += 1
            self.take("punct", "(")
            values = [self.literal()]
            while self.peek("punct", ","):
                self.i += 1
                values.append(self.literal())
            self.take("punct", ")")
            return Cmp(left, "NOTIN" if negate else "IN", tuple(values))
        if self.peek("kw", "LIKE"):
            self.i += 1
            return Cmp(left, "NOTLIKE" if negate else "LIKE", self.operand())
        if not negate and self.peek("kw", "IS"):
            self.i += 1
            if self.peek("kw", "NOT"):
                self.i += 1
                self.take("kw", "NULL")
                return Cmp(left, "NOTNULL")
            self.take("kw", "NULL")
            return Cmp(left, "ISNULL")
        raise WhereError("expected a comparison operator")

    def operand(self):
        if self.peek("kw", "COALESCE"):
            self.i += 1
            self.take("punct", "(")
            args = [self.operand()]
            while self.peek("punct", ","):
                self.i += 1
                args.append(self.operand())
            self.take("punct", ")")
            return Coalesce(tuple(args))
        if self.peek("word"):
            return Name(self.take("word"))
        return Lit(self.literal())

    def literal(self):
        if self.peek("lit"):
            return self.take("lit")
        for kw, value in (("TRUE", True), ("FALSE", False), ("NULL", None)):
            if self.peek("kw", kw):
                self.i += 1
                return value
        got = self.toks[self.i][1] if self.i < len(self.toks) else "end of input"
        raise WhereError(f"expected a value, got {got!r}")


def parse(text: str):
    p = _Parser(text)
    node = p.expr()
    p.done()
    return node


def parse_order(text: str) -> list[tuple[Any, bool]]:
    """``a [ASC|DESC], COALESCE(b, c) ASC`` -> [(operand, descending)]. The documentation
    says ``order`` sorts descending; so an attribute without a direction sorts descending."""
    p = _Parser(text)
    out: list[tuple[Any, bool]] = []
    while True:
        operand = p.operand()
        if isinstance(operand, Lit):
            raise WhereError("order needs attribute names")
        desc = True
        if p.peek("word") and p.toks[p.i][1].upper() in ("ASC", "DESC"):
            desc = p.take("word").upper() == "DESC"
        out.append((operand, desc))
        if not p.peek("punct", ","):
            break
        p.i += 1
    p.done()
    return out


# --- evaluation --------------------------------------------------------------------------

def parse_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise WhereError(f"{text!r} is not a date-time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _coerce(value: Any, lit: Any) -> Any:
    """The literal converted to the type of the field's value (SQL's implicit conversion)."""
    if lit is None or value is None:
        return lit
    if isinstance(value, datetime):
        if isinstance(lit, datetime):
            return lit
        if isinstance(lit, str):
            return parse_datetime(lit)
        raise WhereError(f"cannot compare a date-time with {lit!r}")
    if isinstance(value, bool):
        if isinstance(lit, str):
            if lit.lower() in ("true", "1"):
                return True
            if lit.lower() in ("false", "0"):
                return False
            raise WhereError(f"{lit!r} is not a boolean")
        return bool(lit)
    if isinstance(value, (int, float)):
        if isinstance(lit, str):
            try:
                return float(lit) if "." in lit else int(lit)
            except ValueError:
                raise WhereError(f"{lit!r} is not a number") from None
        return lit
    if isinstance(value, str):
        return lit if isinstance(lit, str) else str(lit).lower() if isinstance(lit, bool) \
            else str(lit)
    return lit


def _norm(v: Any) -> Any:
    return v.casefold() if isinstance(v, str) else v


def _like(pattern: str) -> re.Pattern:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


Getter = Callable[[dict, str], Any]


def compile_operand(node, names: Iterable[str]) -> Callable[[dict], Any]:
    """A function giving the value of an operand (name, literal, COALESCE) for a row."""
    return _compiler(set(names))[0](node)


def compile_where(node, names: Iterable[str]) -> Callable[[dict], bool]:
    """A predicate over rows (dicts); ``names`` are the attributes a where may use."""
    return _compiler(set(names))[1](node)


def _compiler(known: set[str]):

    def operand(n) -> Callable[[dict], Any]:
        if isinstance(n, Name):
            if n.name not in known:
                raise WhereError(f"invalid column name {n.name!r}")
            key = n.name
            return lambda row: row.get(key)
        if isinstance(n, Lit):
            v = n.value
            return lambda row: v
        if isinstance(n, Coalesce):
            parts = [operand(a) for a in n.args]

            def co(row):
                for part in parts:
                    v = part(row)
                    if v is not None:
                        return v
                return None
            return co
        raise WhereError("bad operand")

    def build(n) -> Callable[[dict], bool]:
        if isinstance(n, And):
            a, b = build(n.left), build(n.right)
            return lambda row: a(row) and b(row)
        if isinstance(n, Or):
            a, b = build(n.left), build(n.right)
            return lambda row: a(row) or b(row)
        if isinstance(n, Not):
            a = build(n.inner)
            return lambda row: not a(row)
        if not isinstance(n, Cmp):
            raise WhereError("bad expression")
        left = operand(n.left)
        op = n.op
        if op in ("ISNULL", "NOTNULL"):
            want = op == "ISNULL"
            return lambda row: (left(row) is None) == want
        if op in ("IN", "NOTIN"):
            values = n.right
            hit = op == "IN"

            def isin(row):
                v = left(row)
                if v is None:
                    return False
                wanted = {_norm(_coerce(v, x)) for x in values if x is not None}
                return (_norm(v) in wanted) == hit
            return isin
        right = operand(n.right)
        if op in ("LIKE", "NOTLIKE"):
            hit = op == "LIKE"
            cache: dict[str, re.Pattern] = {}

            def like(row):
                v, p = left(row), right(row)
                if v is None or p is None:
                    return False
                p = str(p)
                rx = cache.get(p) or cache.setdefault(p, _like(p))
                return bool(rx.fullmatch(str(v))) == hit
            return like
        compare = _OPS[op]

        def cmp(row):
            a, b = left(row), right(row)
            if a is None or b is None:
                return False
            if isinstance(n.right, Lit):
                b = _coerce(a, b)
            elif isinstance(n.left, Lit):
                a = _coerce(b, a)
            try:
                return compare(_norm(a), _norm(b))
            except TypeError:
                raise WhereError(f"cannot compare {a!r} with {b!r}") from None
        return cmp

    return operand, build


_OPS = {"=": lambda a, b: a == b, "<>": lambda a, b: a != b, ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


# --- keyset analysis -----------------------------------------------------------------------

def key_range(node, is_key: Callable[[Any], bool]):
    """Which part of the (key, id) order a where selects, so a keyset page can start with a
    bisect instead of a scan. Returns ``(lo, hi, exact)``: rows with lo < (key, id) <= hi
    (None: unbounded); ``exact`` when the where selects exactly that range."""
    if isinstance(node, Cmp) and isinstance(node.right, Lit) and is_key(node.left) \
            and isinstance(node.right.value, str):
        try:
            t = parse_datetime(node.right.value)
        except WhereError:
            return None, None, False
        return {">=": ((t, -1), None, True), ">": ((t, MAX), None, True),
                "=": ((t, -1), (t, MAX), True), "<": (None, (t, -1), True),
                "<=": (None, (t, MAX), True)}.get(node.op, (None, None, False))
    if isinstance(node, And):
        for a, b in ((node.left, node.right), (node.right, node.left)):
            if isinstance(a, Cmp) and a.op == "=" and isinstance(b, Cmp) \
                    and isinstance(b.left, Name) and b.left.name == "id" \
                    and isinstance(b.right, Lit) and isinstance(b.right.value, int) \
                    and b.op in (">", ">="):
                lo, hi, exact = key_range(a, is_key)
                if exact and lo is not None and hi is not None:
                    k = b.right.value - (1 if b.op == ">=" else 0)
                    return (lo[0], k), hi, True
        l1, h1, e1 = key_range(node.left, is_key)
        l2, h2, e2 = key_range(node.right, is_key)
        lo = l1 if l2 is None else l2 if l1 is None else max(l1, l2)
        hi = h1 if h2 is None else h2 if h1 is None else min(h1, h2)
        return lo, hi, e1 and e2
    if isinstance(node, Or):
        l1, h1, e1 = key_range(node.left, is_key)
        l2, h2, e2 = key_range(node.right, is_key)
        lo = None if l1 is None or l2 is None else min(l1, l2)
        hi = None if h1 is None or h2 is None else max(h1, h2)
        touching = (l2 is None or h1 is None or l2 <= h1) and \
                   (l1 is None or h2 is None or l1 <= h2)
        return lo, hi, e1 and e2 and touching
    return None, None, False


def id_candidates(node, field: str = "id") -> set | None:
    """The values of ``field`` a where is limited to (``id = 1 OR id IN (2, 3)``), if any."""
    if isinstance(node, Cmp) and isinstance(node.left, Name) and node.left.name == field:
        if node.op == "=" and isinstance(node.right, Lit):
            return {node.right.value}
        if node.op == "IN":
            return set(node.right)
        return None
    if isinstance(node, Or):
        a, b = id_candidates(node.left, field), id_candidates(node.right, field)
        return None if a is None or b is None else a | b
    if isinstance(node, And):
        a, b = id_candidates(node.left, field), id_candidates(node.right, field)
        return a if b is None else b if a is None else a & b
    return None
