"""accord: the daemon, its command line and its engine."""

__version__ = "0.1.0"
