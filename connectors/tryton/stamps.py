"""A record's version: the ``_timestamp`` of every Tryton record its fields were read from.

Tryton's optimistic lock is per record: a ``write`` or ``delete`` whose context carries
``_timestamp: {"<model>,<id>": stamp}`` is refused with ``ConcurrencyException`` when that
record's ``write_date`` (else ``create_date``) no longer gives ``stamp``. A party's fields
come from up to seven records (the party, one contact mechanism per kind, the invoicing
address), and an edit of a mechanism or an address does not move the party's stamp, so the
version keeps each one's own stamp, as it was when the values were read:

``{"p": stamp, "cm": {"phone": [id, stamp], ...}, "a": [id, stamp]}`` (compact JSON)

``p`` is the main record (a party, a contact, a product, an invoice). ``cm`` has one entry
per kind of mechanism that had a value (the first active one, as ``fields`` shows it); a kind
left out had none. ``a`` is the invoicing address, left out when the party had none. Knowing
which mechanism or address the values came from is what lets an update tell "created,
deleted or replaced since" (a conflict) from "still the same record" (checked by its stamp).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field


class VersionError(ValueError):
    """A version this connector did not write (or that was altered)."""


@dataclass(frozen=True)
class Stamps:
    main: str | None
    mechanisms: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    address: tuple[int, str | None] | None = None

    def dumps(self) -> str:
        out: dict = {"p": self.main}
        if self.mechanisms:
            out["cm"] = {kind: [key, stamp] for kind, (key, stamp)
                         in sorted(self.mechanisms.items())}
        if self.address is not None:
            out["a"] = list(self.address)
        return json.dumps(out, separators=(",", ":"))


def loads(text: str) -> Stamps:
    """The stamps a version holds; VersionError for anything else."""
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or "p" not in data or not _stamp(data["p"]):
            raise VersionError
        mechanisms = {str(kind): _pair(pair) for kind, pair in data.get("cm", {}).items()}
        address = _pair(data["a"]) if data.get("a") is not None else None
    except (TypeError, ValueError, AttributeError):
        raise VersionError(f"not a version of the Tryton connector: {str(text)[:80]!r}") \
            from None
    return Stamps(data["p"], mechanisms, address)


def _stamp(value: object) -> bool:
    return value is None or isinstance(value, str)


def _pair(value: object) -> tuple[int, str | None]:
    if (isinstance(value, list) and len(value) == 2 and isinstance(value[0], int)
            and not isinstance(value[0], bool) and _stamp(value[1])):
        return value[0], value[1]
    raise VersionError
