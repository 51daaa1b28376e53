"""ConnectWise Manage's ``conditions`` query language, parsed (never evaluated as code).

Grammar, as the Developer Guide describes it::

    expr    := term (("AND" | "OR") term)*          AND binds tighter than OR
    term    := "NOT"? ( "(" expr ")" | compare )
    compare := path op value
    path    := name ("/" name)*                    company/id, _info/lastUpdated
    op      := = | != | < | <= | > | >= | contains | like | in | not in
    value   := "text" | 12 | 1.5 | [2024-01-01T00:00:00Z] | True | False | null
             | "(" value ("," value)* ")"          for in

Strings are in double quotes (a quote inside doubled or escaped with a backslash); ``like``
takes ``*`` as a wildcard; text compares case-insensitively, as Manage's SQL collation does.
``parse`` raises ``ConditionError`` with the position of what it could not read; the sandbox
answers that as a 400. ``matches(expr, record)`` evaluates a parsed expression on a record
(nested dicts, reached by the path's parts).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<str>"(?:[^"\\]|\\.|"")*")
    | (?P<date>\[[^\]]*\])
    | (?P<num>-?\d+(?:\.\d+)?(?![\w/]))
    | (?P<op><=|>=|!=|=|<|>)
    | (?P<paren>[(),])
    | (?P<word>[A-Za-z_][\w/.]*)
    )""", re.X)


class ConditionError(ValueError):
    pass


@dataclass(frozen=True)
class Compare:
    path: tuple[str, ...]
    op: str
    value: Any


@dataclass(frozen=True)
class Bool:
    op: str                      # and | or | not
    items: tuple[Any, ...]


def _tokens(text: str) -> list[tuple[str, Any, int]]:
    out: list[tuple[str, Any, int]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ConditionError(f"cannot read the conditions at character {pos + 1}: "
                                 f"{text[pos:pos + 20]!r}")
        kind = m.lastgroup
        raw = m.group(kind)
        if kind == "str":
            value: Any = re.sub(r'\\(.)|""', lambda x: x.group(1) or '"', raw[1:-1])
        elif kind == "date":
            value = _date(raw[1:-1], pos)
        elif kind == "num":
            value = float(raw) if "." in raw else int(raw)
        else:
            value = raw
        out.append((kind, value, pos))
        pos = m.end()
    return out


def _date(raw: str, pos: int) -> datetime:
    try:
        dt = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConditionError(f"not a date at character {pos + 1}: [{raw}]") from None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, word: str | None = None) -> Any:
        if self.i >= len(self.toks):
            return None
        kind, value, _ = self.toks[self.i]
        if word is None:
            return self.toks[self.i]
        return kind == "word" and str(value).lower() == word

    def take(self) -> tuple[str, Any, int]:
        if self.i >= len(self.toks):
            raise ConditionError("the conditions end too early")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expr(self) -> Any:
        items = [self.conj()]
        while self.peek("or"):
            self.take()
            items.append(self.conj())
        return items[0] if len(items) == 1 else Bool("or", tuple(items))

    def conj(self) -> Any:
        items = [self.term()]
        while self.peek("and"):
            self.take()
            items.append(self.term())
        return items[0] if len(items) == 1 else Bool("and", tuple(items))

    def term(self) -> Any:
        if self.peek("not"):
            self.take()
            return Bool("not", (self.term(),))
        tok = self.peek()
        if tok and tok[0] == "paren" and tok[1] == "(":
            self.take()
            inner = self.expr()
            self.close()
            return inner
        return self.compare()

    def close(self) -> None:
        kind, value, pos = self.take()
        if (kind, value) != ("paren", ")"):
            raise ConditionError(f"expected ')' at character {pos + 1}")

    def compare(self) -> Compare:
        kind, path, pos = self.take()
        if kind != "word":
            raise ConditionError(f"expected a field name at character {pos + 1}")
        kind, op, pos = self.take()
        if kind == "word":
            op = str(op).lower()
            if op == "not":
                kind2, op2, pos = self.take()
                if str(op2).lower() not in ("in", "like", "contains"):
                    raise ConditionError(f"expected in, like or contains after not at "
                                         f"character {pos + 1}")
                op = f"not {str(op2).lower()}"
            elif op not in ("contains", "like", "in"):
                raise ConditionError(f"unknown operator {op!r} at character {pos + 1}")
        elif kind != "op":
            raise ConditionError(f"expected an operator at character {pos + 1}")
        if op.endswith("in"):
            kind, value, pos = self.take()
            if (kind, value) != ("paren", "("):
                raise ConditionError(f"expected '(' after in at character {pos + 1}")
            values = [self.value()]
            while self.peek() and self.peek()[:2] == ("paren", ","):
                self.take()
                values.append(self.value())
            self.close()
            return Compare(tuple(str(path).split("/")), op, tuple(values))
        return Compare(tuple(str(path).split("/")), op, self.value())

    def value(self) -> Any:
        kind, value, pos = self.take()
        if kind in ("str", "date", "num"):
            return value
        if kind == "word" and str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        if kind == "word" and str(value).lower() == "null":
            return None
        raise ConditionError(f"expected a value at character {pos + 1}")


def parse(text: str) -> Any:
    p = _Parser(text)
    if not p.toks:
        raise ConditionError("empty conditions")
    out = p.expr()
    if p.i != len(p.toks):
        raise ConditionError(f"unexpected text at character {p.toks[p.i][2] + 1}")
    return out


def _get(record: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = record
    for part in path:
        if not isinstance(node, Mapping):
            return None
        hit = next((k for k in node if k.lower() == part.lower()), None)
        node = node.get(hit) if hit is not None else None
    return node


def _norm(v: Any) -> Any:
    if isinstance(v, str):
        try:
            if re.match(r"\d{4}-\d\d-\d\dT", v):
                return _date(v, 0)
        except ConditionError:
            pass
        return v.casefold()
    return v


def _cmp(op: str, a: Any, b: Any) -> bool:
    a, b = _norm(a), _norm(b)
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if op in ("in", "not in"):
        hit = a in tuple(_norm(x) for x in b)
        return hit if op == "in" else not hit
    if op in ("contains", "not contains"):
        hit = isinstance(a, str) and isinstance(b, str) and b in a
        return hit if op == "contains" else not hit
    if op in ("like", "not like"):
        pattern = "^" + ".*".join(re.escape(p) for p in str(b).split("*")) + "$"
        hit = isinstance(a, str) and re.match(pattern, a) is not None
        return hit if op == "like" else not hit
    if a is None or b is None:
        return False
    try:
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    except TypeError:
        return False


def matches(expr: Any, record: Mapping[str, Any]) -> bool:
    if isinstance(expr, Compare):
        return _cmp(expr.op, _get(record, expr.path), expr.value)
    if expr.op == "and":
        return all(matches(e, record) for e in expr.items)
    if expr.op == "or":
        return any(matches(e, record) for e in expr.items)
    return not matches(expr.items[0], record)


def quote(value: Any) -> str:
    """A value written in the language (for a client building conditions)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, datetime):
        return f"[{value.astimezone(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')}]"
    if value is None:
        return "null"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
