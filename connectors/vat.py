"""Looking up VAT numbers written in any way ("BE 0123.456.789", "be0123456789",
"0123 456 789"): systems store them as typed and can only compare text, so a lookup asks for
the number's letters and digits in order, whatever lies between them (a LIKE pattern), and
the engine then compares the normalised values itself."""
from __future__ import annotations

import re


def significant(value: object) -> str:
    """The letters and digits that make the number: no separators, upper case, no two-letter
    country prefix before the digits."""
    text = re.sub(r"[^0-9A-Za-z]", "", str(value)).upper()
    return re.sub(r"^[A-Z]{2}(?=\d)", "", text)


def like_pattern(value: object) -> str | None:
    """``%0%1%2%...%`` for the number's significant characters, or None for an empty one."""
    chars = significant(value)
    return ("%" + "%".join(chars) + "%") if chars else None
