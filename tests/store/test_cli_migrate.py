"""`accord migrate`, and the daemon and the commands refusing a state database that is behind,
on SQLite and PostgreSQL (``state_url``)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from daemon import cli
from daemon.store import schema
from daemon.store.db import make_engine
from daemon.store.tables import T
from tests.dbs import OPEN
from tests.test_cli import INTEG, config_text




@pytest.fixture
def cfg_path(tmp_path, state_url) -> str:
    text = config_text(tmp_path).replace(f"sqlite:///{tmp_path / 'state.db'}", state_url)
    assert state_url in text
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


async def accord(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await cli.amain([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


async def test_a_database_behind_is_refused_until_accord_migrate(capsys, cfg_path, state_url):
    await schema.upgrade(state_url, "0001")
    line = (f"the state database at {schema.where(state_url)} is at revision 0001, this accord "
            f"needs {schema.head()}: run `accord migrate --config {cfg_path}`")
    for argv in (["status"], ["exclude", INTEG, "companies", "left", "C1"],
                 ["sync", INTEG], ["run"]):
        code, out, err = await accord(capsys, *argv, "--config", cfg_path)
        assert code == 2, (argv, out, err)
        assert err == f"accord {argv[0]}: {line}\n", argv
    assert await schema.current(state_url) == "0001"          # nobody wrote

    code, out, err = await accord(capsys, "migrate", "--config", cfg_path)
    assert (code, err) == (0, "")
    assert out == f"{schema.where(state_url)}: 0001 → {schema.head()}\n"
    code, out, _ = await accord(capsys, "migrate", "--config", cfg_path)
    assert (code, out) == (0, f"{schema.where(state_url)}: already at {schema.head()}\n")

    code, _, err = await accord(capsys, "exclude", INTEG, "companies", "left", "C1",
                                "--config", cfg_path)
    assert (code, err) == (0, "")
    db = make_engine(state_url)
    OPEN.append(db)
    async with db.connect() as conn:
        rows = (await conn.execute(select(T["exclusions"].c.record_id))).all()
    assert [r[0] for r in rows] == ["C1"]


async def test_a_brand_new_database_is_migrated_by_the_first_command(capsys, cfg_path,
                                                                    state_url):
    """The README's quick start: a fresh state database needs no `accord migrate`."""
    code, _, err = await accord(capsys, "status", "--config", cfg_path)
    assert (code, err) == (0, "")
    assert await schema.current(state_url) == schema.head()


async def test_migrate_a_database_from_before_migrations(capsys, cfg_path, state_url):
    await schema.upgrade(state_url, "0001")
    await schema.stamp(state_url, None)
    code, _, err = await accord(capsys, "status", "--config", cfg_path)
    assert code == 2 and "is at no revision (made before migrations)" in err
    code, out, _ = await accord(capsys, "migrate", "--config", cfg_path)
    assert (code, out) == (0, f"{schema.where(state_url)}: none → {schema.head()}\n")


async def test_migrate_that_cannot_reach_the_database_says_so(capsys, tmp_path):
    path = tmp_path / "config.toml"
    # (a PostgreSQL port nobody listens on: a SQLite file that cannot be opened leaves an
    # aiosqlite thread behind that complains about its closed loop in a later test)
    path.write_text(config_text(tmp_path).replace(
        f"sqlite:///{tmp_path / 'state.db'}", "postgresql://accord:pw@127.0.0.1:9/accord"))
    code, out, err = await accord(capsys, "migrate", "--config", path)
    assert code == 2 and out == ""
    assert err.startswith("accord migrate: cannot migrate the state database at "
                          "postgresql://accord:***@127.0.0.1:9/accord: ")
    assert "pw" not in err
