"""Alembic migrations of the state database; run them with ``accord migrate``
(daemon.store.schema builds the Alembic configuration in code, no alembic.ini)."""
