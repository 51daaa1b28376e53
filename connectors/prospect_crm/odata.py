"""The small OData v4 subset both sides of the Prospect CRM connector speak.

For the connector: literal formatting (``literal``) and ``$orderby``/query-string building.
For the sandbox: a ``$filter`` parser that compiles an expression into a predicate.

Supported ``$filter`` grammar (a subset of OData v4 URL conventions)::

    expr     := or_expr
    or_expr  := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | cmp
    cmp      := value (("eq"|"ne"|"gt"|"ge"|"lt"|"le") value | "in" "(" value ("," value)* ")")?
    value    := "(" expr ")" | func "(" args ")" | literal | path
    func     := tolower | toupper | trim | contains | startswith | endswith
    literal  := 'text' (with '' for a quote) | 12 | 1.5 | true | false | null
                | 2024-05-01T10:00:00.123456Z (DateTimeOffset, unquoted)
    path     := Name ("/" Name)*        e.g. MainAddress/Postcode, AccountManager/UserName
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Callable
from urllib.parse import quote

from connectors.base import utc

Getter = Callable[[Any, str], Any]      # (entity, "A/B") -> value


class ODataError(ValueError):
    """A query option the service cannot parse (answered 400)."""


# --- formatting (connector side) -----------------------------------------------------------

def format_datetime(dt: datetime) -> str:
    """An OData DateTimeOffset literal in UTC with microseconds: 2024-05-01T10:00:00.000000Z
    (``isoformat``: a third of ``strftime``'s time, and the sandbox formats every date of
    every answer)."""
    return utc(dt).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_datetime(text: str) -> datetime:
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def literal(value: Any) -> str:
    """A Python value as an OData literal."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        return format_datetime(value)
    return "'" + str(value).replace("'", "''") + "'"


def query_string(params: dict[str, Any]) -> str:
    """Encode query options keeping ``$``, ``,``, ``(``, ``)``, ``'``, ``/`` readable."""
    return "&".join(f"{k}={quote(str(v), safe=_SAFE)}"
                    for k, v in params.items() if v is not None)


_SAFE = "$,()'/:"


# --- parsing (sandbox side) ----------------------------------------------------------------

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<str>'(?:[^']|'')*')
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)
    | (?P<punct>[(),])
    )""", re.VERBOSE)

_CMP = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCS = {"tolower", "toupper", "trim", "contains", "startswith", "endswith"}


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ODataError(f"Syntax error at position {pos} in $filter")
        pos = m.end()
        kind = m.lastgroup
        raw = m.group(kind)
        if kind == "dt":
            out.append(("lit", parse_datetime(raw)))
        elif kind == "num":
            out.append(("lit", float(raw) if "." in raw else int(raw)))
        elif kind == "str":
            out.append(("lit", raw[1:-1].replace("''", "'")))
        elif kind == "name" and raw in ("true", "false", "null"):
            out.append(("lit", {"true": True, "false": False, "null": None}[raw]))
        else:
            out.append((kind, raw))
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


Node = Callable[[Any], Any]
# What an index can answer for a node: ("eq", path, value), ("ieq", path, value) (tolower(path)
# eq value), ("ge", path, value), ("gt", path, value), ("or", [hints]), ("and", [hints]);
# None: only testing every row can tell. Kept on the node as ``node.hint``.
Hint = tuple | None


def _hinted(node: Node, hint: Hint) -> Node:
    node.hint = hint                    # type: ignore[attr-defined]
    return node


def hint_of(node: Node) -> Hint:
    return getattr(node, "hint", None)


class _Parser:
    def __init__(self, text: str, getter: Getter) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.get = getter

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, kind: str | None = None, value: str | None = None) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            raise ODataError(f"Syntax error in $filter: expected {value or kind}, got "
                             f"{tok[1] if tok else 'end of expression'}")
        self.i += 1
        return tok

    def is_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "name" and tok[1] in words

    def parse(self) -> Node:
        node = self.or_expr()
        if self.peek() is not None:
            raise ODataError(f"Syntax error in $filter near {self.peek()[1]!r}")
        return node

    def or_expr(self) -> Node:
        parts = [self.and_expr()]
        while self.is_word("or"):
            self.take()
            parts.append(self.and_expr())
        if len(parts) == 1:
            return parts[0]
        hints = [hint_of(p) for p in parts]
        return _hinted(lambda e: any(p(e) for p in parts),
                       None if any(h is None for h in hints) else ("or", hints))

    def and_expr(self) -> Node:
        parts = [self.not_expr()]
        while self.is_word("and"):
            self.take()
            parts.append(self.not_expr())
        if len(parts) == 1:
            return parts[0]
        hints = [h for h in map(hint_of, parts) if h is not None]
        return _hinted(lambda e: all(p(e) for p in parts), ("and", hints) if hints else None)

    def not_expr(self) -> Node:
        if self.is_word("not"):
            self.take()
            inner = self.not_expr()
            return lambda e: not inner(e)
        return self.cmp()

    def cmp(self) -> Node:
        left = self.value()
        if self.is_word(*_CMP):
            op = self.take()[1]
            right = self.value()
            return _hinted(lambda e: _compare(op, left(e), right(e)), _cmp_hint(op, left, right))
        if self.is_word("in"):
            self.take()
            self.take("punct", "(")
            items = [self.value()]
            while self.peek() == ("punct", ","):
                self.take()
                items.append(self.value())
            self.take("punct", ")")
            hints = [_cmp_hint("eq", left, it) for it in items]
            return _hinted(lambda e: any(_compare("eq", left(e), it(e)) for it in items),
                           None if any(h is None for h in hints) else ("or", hints))
        return left

    def value(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise ODataError("Syntax error in $filter: unexpected end")
        if tok == ("punct", "("):
            self.take()
            inner = self.or_expr()
            self.take("punct", ")")
            return inner
        if tok[0] == "lit":
            self.take()
            val = tok[1]
            node = lambda e: val                # noqa: E731
            node.literal = (val,)               # type: ignore[attr-defined]
            return node
        if tok[0] == "name":
            self.take()
            name = tok[1]
            if name in _FUNCS and self.peek() == ("punct", "("):
                self.take()
                args = [self.or_expr()]
                while self.peek() == ("punct", ","):
                    self.take()
                    args.append(self.or_expr())
                self.take("punct", ")")
                node = _function(name, args)
                if name == "tolower" and getattr(args[0], "path", None):
                    node.lower_path = args[0].path      # type: ignore[attr-defined]
                return node
            getter = self.get
            node = lambda e: getter(e, name)    # noqa: E731
            node.path = name                    # type: ignore[attr-defined]
            return node
        raise ODataError(f"Syntax error in $filter near {tok[1]!r}")


def _cmp_hint(op: str, left: Node, right: Node) -> Hint:
    """The index hint of ``left op right`` where one side is a property (or tolower of one)
    and the other a literal."""
    if getattr(left, "literal", None) is not None and op in ("eq",):
        left, right = right, left
    lit = getattr(right, "literal", None)
    if lit is None:
        return None
    if op == "eq" and getattr(left, "lower_path", None):
        return ("ieq", left.lower_path, lit[0])
    path = getattr(left, "path", None)
    if path is None:
        return None
    if op == "eq":
        return ("eq", path, lit[0])
    if op in ("ge", "gt"):
        return (op, path, lit[0])
    return None


def _function(name: str, args: list[Node]) -> Node:
    def text(v: Any) -> str | None:
        return None if v is None else str(v)

    if name in ("tolower", "toupper", "trim"):
        if len(args) != 1:
            raise ODataError(f"{name} takes one argument")
        fn = {"tolower": str.lower, "toupper": str.upper, "trim": str.strip}[name]
        return lambda e: None if (v := text(args[0](e))) is None else fn(v)
    if len(args) != 2:
        raise ODataError(f"{name} takes two arguments")
    fn2 = {"contains": lambda a, b: b in a, "startswith": str.startswith,
           "endswith": str.endswith}[name]
    return lambda e: (a := text(args[0](e))) is not None and (b := text(args[1](e))) is not None \
        and fn2(a, b)


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    if a is None or b is None:
        return False
    try:
        return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op]
    except TypeError:
        raise ODataError(f"Cannot compare {type(a).__name__} with {type(b).__name__}") from None


def compile_filter(text: str, getter: Getter) -> Node:
    """Compile a ``$filter`` expression to ``predicate(entity) -> bool``; the predicate's
    ``hint`` says what an index could answer for it (see ``Hint``)."""
    node = _Parser(text, getter).parse()
    return _hinted(lambda e: bool(node(e)), hint_of(node))


def parse_orderby(text: str) -> list[tuple[str, bool]]:
    """``"A desc,B"`` -> ``[("A", True), ("B", False)]`` (path, descending)."""
    out = []
    for part in text.split(","):
        bits = part.strip().split()
        if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1] not in ("asc", "desc")):
            raise ODataError(f"Invalid $orderby clause {part.strip()!r}")
        out.append((bits[0], len(bits) == 2 and bits[1] == "desc"))
    return out
