"""Shared test set-up: logs at WARNING (they are captured; a failing test shows them)."""
import logging

import structlog

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
