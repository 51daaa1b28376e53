"""Shared test set-up: logs at WARNING (they are captured; a failing test shows them)."""
import logging

import pytest
import structlog

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@pytest.fixture(autouse=True)
def restore_logging():
    """Commands configure logging for the whole process; put the test set-up back after."""
    old, root = structlog.get_config(), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**old)
    root.handlers[:] = handlers
    root.setLevel(level)
