"""Alembic environment for accord's state database (SQLite or PostgreSQL).

``daemon.store.schema`` runs the migrations on a connection it opened itself (an
AsyncConnection's sync face, through ``run_sync``) and hands it over in
``config.attributes["connection"]``. Without one (the ``alembic`` command line pointed here
by hand) the URL in ``sqlalchemy.url`` is opened with accord's own async engine.
"""
from __future__ import annotations

import asyncio

from alembic import context

from daemon.store.tables import metadata

config = context.config


def _configure(**kw) -> None:
    context.configure(target_metadata=metadata, compare_type=True, **kw)


def run_on(connection) -> None:
    # SQLite cannot ALTER most things: batch mode copies the table instead
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    from daemon.store.db import make_engine
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run_on)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    run_on(config.attributes["connection"])
else:
    asyncio.run(_run_with_own_engine(config.get_main_option("sqlalchemy.url")))
