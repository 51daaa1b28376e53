"""Durations and cron expressions as a configuration writes them, checked in one place.

``config.py`` validates with these, ``service.py`` builds its triggers with them, so a value
that passes ``accord check`` is one the scheduler takes (a reload cannot fail half-way on a
schedule the validation let through).
"""
from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
FORMS = "use a number and a unit: 500ms, 30s, 15m, 1h, 1d"


def seconds(text: str | int | float) -> float:
    """'15m' -> 900.0; bare numbers are seconds. ValueError names the value and the forms."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r} ({FORMS})")
    if isinstance(text, (int, float)):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a duration: {text!r} ({FORMS})")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def crontab(expr: str):
    """The APScheduler trigger of a five-field cron expression (minute hour day month
    weekday); ValueError says what is wrong with it."""
    from apscheduler.triggers.cron import CronTrigger
    try:
        return CronTrigger.from_crontab(expr)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a cron expression: {expr!r} ({exc}; five fields: "
                         f"minute hour day-of-month month day-of-week)") from None
