"""Logging: one JSON object per line on stdout (or a console rendering for people).

``configure(fmt, level)`` sets up structlog for the whole process. Every event carries
``timestamp`` (ISO 8601, UTC), ``level``, ``event``, ``logger`` and the fields bound by the
caller. Values whose key looks secret (key, token, secret, password, authorization,
signature) are replaced by ``"***"`` -- defence in depth: connectors never log secrets anyway.
Plain stdlib logging (aiohttp, apscheduler, ...) goes to the same output at WARNING and above.

JSON (``log_format = "json"``, or ``auto`` on a pipe): one object per line, every key as
logged, for machines (journald, ``jq``).

Console (``log_format = "console"``, ``auto`` on a terminal, ``accord run --console``):
``ConsoleRenderer``, one short line per event for a person reading along -- the local time,
the level when it is a warning or an error, the event, ``integration/flow``, then the other
keys in the order they were logged, ``None`` and a summary's zero counts left out, each value
cut at 60 characters and the line at 160; a traceback under its line. The chatter of a run (``run.start``, ``step.start``
and the record lines that are not an error, a conflict or a refusal: ``record.created``,
``link.matched`` ...) is left out unless ``verbose``: what remains is a line per step and per
run with its counts and duration, and every line that needs a person.

``status_line`` is the one line of progress a command may keep at the bottom of a terminal
(``accord sync``): a log line clears it, is written, and the progress is drawn again under it.
"""
from __future__ import annotations

import logging
import re
import sys
from datetime import datetime
from typing import Any, Literal, TextIO

import orjson
import structlog

_SECRET = re.compile(r"(key|token|secret|password|passwd|authorization|signature|credential)",
                     re.IGNORECASE)
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}


def _secret_key(key: Any) -> bool:
    return isinstance(key, str) and bool(_SECRET.search(key))


def _redact_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if _secret_key(k) else _redact_value(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: dict) -> dict:
    """Replace the value of any key that looks secret, at any depth, by '***'."""
    for key in list(event_dict):
        if key == "event":
            continue
        if _secret_key(key):
            event_dict[key] = "***"
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


class LineLogger:
    """Writes one rendered line to the current sys.stdout (or sys.stderr), flushed at once,
    so that a pipe (journald, docker logs, a test reading the daemon's output) sees it live."""

    def __init__(self, name: str | None = None, stream: str = "stdout") -> None:
        self.name = name or "accord"
        self._stream = stream

    def _out(self) -> TextIO:
        return sys.stderr if self._stream == "stderr" else sys.stdout

    def msg(self, message: str) -> None:
        out = self._out()
        try:
            status_line.clear()
            out.write(message + "\n")
            out.flush()
            status_line.redraw()
        except (ValueError, OSError):       # closed at interpreter exit, or a broken pipe
            pass

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _Factory:
    def __init__(self, stream: str) -> None:
        self.stream = stream

    def __call__(self, *args: Any) -> LineLogger:
        return LineLogger(args[0] if args else None, self.stream)


class StatusLine:
    """One line of progress redrawn in place on a terminal; log lines go above it."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.out: TextIO | None = None

    def show(self, text: str, out: TextIO) -> None:
        self.out, self.text = out, text
        self._write("\r\x1b[K" + text)

    def clear(self) -> None:
        if self.text is not None:
            self._write("\r\x1b[K")

    def redraw(self) -> None:
        if self.text is not None:
            self._write(self.text)

    def end(self) -> None:
        """Keep the line as it is and go on below it."""
        if self.text is not None:
            self._write("\n")
        self.text = None

    def _write(self, text: str) -> None:
        try:
            assert self.out is not None
            self.out.write(text)
            self.out.flush()
        except (ValueError, OSError):
            self.text = None


status_line = StatusLine()

# the chatter of a run: shown on the console with --verbose only
_CHATTER_EVENTS = {"run.start", "step.start", "sandbox.activity", "lease.acquired"}
_CHATTER_PREFIXES = ("record.", "link.", "intent.", "delete.")
_HEAD = ("integration", "flow")
_COLOURS = {"warning": "\x1b[33m", "error": "\x1b[31;1m", "critical": "\x1b[31;1m"}


class ConsoleRenderer:
    """A line for a person: see the module docstring."""

    VALUE = 60          # characters of one value
    LINE = 160          # characters of one line (a traceback goes under it, whole)

    def __init__(self, *, colors: bool = False, verbose: bool = False) -> None:
        self.colors, self.verbose = colors, verbose

    def chatter(self, event: str, level: str) -> bool:
        if level in ("warning", "error", "critical"):
            return False
        return event in _CHATTER_EVENTS or event.startswith(_CHATTER_PREFIXES)

    def __call__(self, _logger: Any, _method: str, event_dict: dict) -> str:
        level = str(event_dict.pop("level", "info"))
        event = str(event_dict.pop("event", ""))
        if not self.verbose and self.chatter(event, level):
            raise structlog.DropEvent
        stamp = event_dict.pop("timestamp", None)
        event_dict.pop("logger", None)
        trace = event_dict.pop("exception", None)
        parts = [_clock(stamp)]
        if level in _COLOURS:
            label = "ERROR" if level != "warning" else "warn"
            parts.append(f"{_COLOURS[level]}{label}\x1b[0m" if self.colors else label)
        parts.append(event)
        head = "/".join(str(event_dict.pop(k)) for k in _HEAD if event_dict.get(k) is not None)
        if head:
            parts.append(head)
        seconds_key = event.endswith(".end")    # a summary: its zero counts say nothing
        seconds = event_dict.pop("seconds", None) if seconds_key else None
        for key, value in event_dict.items():
            if value is None or key in _HEAD or (seconds_key and value == 0
                                                 and type(value) is int):
                continue
            if key == "status" and event.endswith(".end"):
                parts.append(str(value))
                if seconds is not None:
                    parts.append(f"{seconds:.1f}s" if isinstance(seconds, (int, float))
                                 else str(seconds))
                    seconds = None
                continue
            parts.append(f"{key}={_value(value, self.VALUE)}")
        line = " ".join(parts)
        if len(line) > self.LINE:
            line = line[: self.LINE - 1] + "…"
        return line + ("\n" + trace.rstrip() if trace else "")


def _clock(stamp: Any) -> str:
    """HH:MM:SS in the local time of the person reading."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).astimezone() \
            .strftime("%H:%M:%S")
    except ValueError:
        return datetime.now().strftime("%H:%M:%S")


def _value(value: Any, n: int) -> str:
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (dict, list, tuple)):
        text = orjson.dumps(value, default=str).decode()
    else:
        text = str(value)
    text = " ".join(text.split())               # one line
    if len(text) > n:
        text = text[: n - 1] + "…"
    return f'"{text}"' if (" " in text or not text) else text


def _json_renderer(_logger: Any, _method: str, event_dict: dict) -> str:
    head = {k: event_dict.pop(k) for k in ("timestamp", "level", "event", "logger")
            if k in event_dict}
    return orjson.dumps({**head, **event_dict}, default=str,
                        option=orjson.OPT_NON_STR_KEYS).decode()


class _ToStructlog(logging.Handler):
    """Stdlib records (aiohttp, apscheduler, asyncio) into the same structlog output."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = structlog.get_logger(record.name)
            fields: dict[str, Any] = {}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            logger.log(record.levelno, record.getMessage(), **fields)
        except Exception:       # never let logging break the daemon
            self.handleError(record)


def configure(fmt: Literal["auto", "json", "console"] = "auto", level: str = "info", *,
              stream: Literal["stdout", "stderr"] = "stdout", verbose: bool = False) -> None:
    """Set up structlog (and route stdlib logging into it). Safe to call again (reload).
    ``verbose``: the console shows the chatter of a run too (JSON always has everything)."""
    out = sys.stderr if stream == "stderr" else sys.stdout
    if fmt == "auto":
        fmt = "console" if _isatty(out) else "json"
    lvl = _LEVELS.get(str(level).lower(), logging.INFO)
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    processors.append(structlog.processors.format_exc_info)
    if fmt == "json":
        processors.append(_json_renderer)
    else:
        processors.append(ConsoleRenderer(colors=_isatty(out), verbose=verbose))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_Factory(stream),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _ToStructlog):
            root.removeHandler(h)
    handler = _ToStructlog(level=logging.WARNING)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False
