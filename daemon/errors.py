"""Errors shared across the daemon's modules (so that none has to import another for them)."""
from __future__ import annotations


class ConfigError(Exception):
    """A configuration that cannot be used; ``str()`` is one clear line."""
