"""Logging: one JSON object per line on stdout (or a readable console rendering on a terminal).

``configure(fmt, level)`` sets up structlog for the whole process. Every event carries
``timestamp`` (ISO 8601, UTC), ``level``, ``event``, ``logger`` and the fields bound by the
caller. Values whose key looks secret (key, token, secret, password, authorization,
signature) are replaced by ``"***"`` -- defence in depth: connectors never log secrets anyway.
Plain stdlib logging (aiohttp, apscheduler, ...) goes to the same output at WARNING and above.
"""
from __future__ import annotations

import logging
import re
import sys
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
            out.write(message + "\n")
            out.flush()
        except (ValueError, OSError):       # closed at interpreter exit, or a broken pipe
            pass

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _Factory:
    def __init__(self, stream: str) -> None:
        self.stream = stream

    def __call__(self, *args: Any) -> LineLogger:
        return LineLogger(args[0] if args else None, self.stream)


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
              stream: Literal["stdout", "stderr"] = "stdout") -> None:
    """Set up structlog (and route stdlib logging into it). Safe to call again (reload)."""
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
    if fmt == "json":
        processors += [structlog.processors.format_exc_info, _json_renderer]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=_isatty(out))]
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
