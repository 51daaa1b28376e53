from tests.dbs import state_url  # noqa: F401  (the fixture: SQLite and PostgreSQL)
