"""Configuration errors name the file and the key; secrets come from ${ENV} and *_file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import structlog

from daemon import cli
from daemon.config import ConfigError, load
from daemon.logging import configure
from tests.test_cli import config_text


def write(tmp: Path, text: str) -> Path:
    p = tmp / "config.toml"
    p.write_text(text)
    return p


def error_of(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    return msg


def test_the_example_config_loads():
    cfg = load(Path(__file__).resolve().parent.parent / "config.example.toml")
    assert list(cfg.integrations) == ["unleashed-prospect", "sage50-salesmgmt",
                                      "bob-crm", "ajera-vantagepoint", "dtools-manage"]
    assert [j.name for j in cfg.integrations["unleashed-prospect"].jobs] == \
        ["fix-account-managers"]
    sage = cfg.integrations["sage50-salesmgmt"]
    assert [f.name for f in sage.flows] == ["companies", "contacts", "products", "invoices"]
    assert sage.schedule.every == "1m"               # the config's schedule over the preset's
    dt = cfg.integrations["dtools-manage"]
    assert [f.name for f in dt.flows][:3] == ["clients", "contacts", "products"]


def test_unknown_key_is_named(tmp_path):
    p = write(tmp_path, config_text(tmp_path).replace('log_level = "info"',
                                                      'log_level = "info"\nlog_colour = 1'))
    assert "daemon.log_colour" in error_of(p)


def test_bad_type_is_named(tmp_path):
    p = write(tmp_path, config_text(tmp_path, schedule='every = "1m", run_at_start = "maybe"'))
    msg = error_of(p)
    assert "integrations.ul.schedule.run_at_start" in msg


def test_bad_literal_is_named(tmp_path):
    p = write(tmp_path, config_text(tmp_path).replace('log_format = "json"',
                                                      'log_format = "xml"'))
    assert "daemon.log_format" in error_of(p)


def test_missing_env_var_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCORD_TEST_NOPE", raising=False)
    p = write(tmp_path, config_text(tmp_path, api_key='"${ACCORD_TEST_NOPE}"'))
    msg = error_of(p)
    assert "systems.unleashed.api_key" in msg and "ACCORD_TEST_NOPE" in msg


def test_unreadable_secret_file_is_named(tmp_path):
    p = write(tmp_path, config_text(tmp_path, token='token_file = "missing.token"'))
    msg = error_of(p)
    assert "systems.prospect.token_file" in msg and "missing.token" in msg


def test_unknown_system_type_is_named(tmp_path):
    p = write(tmp_path, config_text(tmp_path).replace('type = "prospect_crm"',
                                                      'type = "salesforce"'))
    msg = error_of(p)
    assert "systems.prospect.type" in msg and "salesforce" in msg


def test_unknown_preset_option_is_named(tmp_path):
    p = write(tmp_path, config_text(tmp_path, options="two_ways = true"))
    msg = error_of(p)
    assert "integrations.ul.options.two_ways" in msg and "two_way" in msg


def test_missing_connector_setting_is_named(tmp_path):
    p = write(tmp_path, config_text(tmp_path, token=""))
    assert "systems.prospect.token" in error_of(p)


def test_secrets_from_env_and_file_are_resolved(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCORD_TEST_UL_KEY", "env-secret-123")
    (tmp_path / "crm.token").write_text("file-secret-456\n")
    p = write(tmp_path, config_text(tmp_path, api_key='"${ACCORD_TEST_UL_KEY}"',
                                    token='token_file = "crm.token"'))
    cfg = load(p)
    assert cfg.systems["unleashed"].model_extra["api_key"] == "env-secret-123"
    assert cfg.systems["prospect"].model_extra["token"] == "file-secret-456"


async def test_cli_prints_the_config_error_and_exits_2(tmp_path, capsys):
    p = write(tmp_path, config_text(tmp_path, options="two_ways = true"))
    code = await cli.amain(["sync", "ul", "--config", str(p)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert str(p) in err and "integrations.ul.options.two_ways" in err


def test_log_redacts_secret_looking_keys(capsys):
    configure("json", "info")
    log = structlog.get_logger("accord.test")
    log.info("connect", api_key="k-1", token="t-2", headers={"Authorization": "Bearer t-3"},
             client_secret="s-4", records=3)
    log.debug("hidden")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    line = json.loads(out[0])
    assert line["event"] == "connect" and line["logger"] == "accord.test"
    assert line["level"] == "info" and line["timestamp"].endswith("Z")
    assert line["records"] == 3
    for secret in ("k-1", "t-2", "t-3", "s-4"):
        assert secret not in out[0]


def test_stdlib_warnings_go_to_the_same_output(capsys):
    import logging
    configure("json", "info")
    logging.getLogger("aiohttp.client").info("chatty")
    logging.getLogger("aiohttp.client").warning("something odd: %s", "x")
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["logger"], x["event"], x["level"]) for x in lines] == \
        [("aiohttp.client", "something odd: x", "warning")]


# --- schedules: what `check` passes, the scheduler takes ---------------------------------------
@pytest.mark.parametrize("schedule, key, words", [
    ('every = "1 minute"', "integrations.ul.schedule.every", "not a duration"),
    ('every = "0s"', "integrations.ul.schedule.every", "too short"),
    ('every = "9s", jitter = "0s"', "integrations.ul.schedule.every", "at least 10s"),
    ('every = "1m", jitter = "soon"', "integrations.ul.schedule.jitter", "not a duration"),
    ('every = "1m", jitter = "2m"', "integrations.ul.schedule", "shorter than every"),
    ('cron = "61 * * * *"', "integrations.ul.schedule.cron", "not a cron expression"),
    ('cron = "* * *"', "integrations.ul.schedule.cron", "five fields"),
])
def test_a_bad_schedule_is_named(tmp_path, schedule, key, words):
    msg = error_of(write(tmp_path, config_text(tmp_path, schedule=schedule)))
    assert f"{key}: " in msg and words in msg and "Value error" not in msg


def test_a_bad_job_cron_is_named(tmp_path):
    extra = ('[[integrations.ul.jobs]]\nname = "night"\nflow = "companies"\n'
             'cron = "0 25 * * *"\n')
    msg = error_of(write(tmp_path, config_text(tmp_path, extra=extra)))
    assert "integrations.ul.jobs.0.cron: not a cron expression: '0 25 * * *'" in msg


def test_a_good_schedule_and_cron_load():
    from daemon.config import Schedule
    assert Schedule(every="10s", jitter="0s").interval() == 10
    assert Schedule(cron="*/5 * * * *", jitter="1h").cron == "*/5 * * * *"
    assert Schedule(every="20s").jitter == "0s"         # the default 30s does not fit in 20s


# --- files and the state database -------------------------------------------------------------
def test_a_config_that_is_a_directory_or_not_utf8_is_one_line(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    assert "is a directory" in error_of(tmp_path / "dir.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes(config_text(tmp_path).encode() + "# caf\xe9\n".encode("latin-1"))
    assert "not UTF-8 text" in error_of(latin)


def test_a_secret_file_that_is_not_utf8_is_named_without_its_content(tmp_path):
    (tmp_path / "crm.token").write_bytes(b"\xff\xfesecret-bytes")
    msg = error_of(write(tmp_path, config_text(tmp_path, token='token_file = "crm.token"')))
    assert "systems.prospect.token_file" in msg and "not UTF-8" in msg
    assert "secret-bytes" not in msg


@pytest.mark.parametrize("url, words", [
    ("postgresql://accord:pw-123@db:notaport/accord", "not a database URL"),
    ("nonsense", "not a database URL"),
    ("postgresql+psycopg://accord:pw-123@db/accord", "driver for postgresql+psycopg is not "
                                                      "installed"),
    ("mysql+aiomysql://accord:pw-123@db/accord", "mysql is not supported"),
    ("sqlite:///no/such/dir/state.db", "does not exist"),
])
def test_a_bad_database_url_is_named_without_its_password(tmp_path, url, words):
    text = config_text(tmp_path).replace(f"sqlite:///{tmp_path / 'state.db'}", url)
    msg = error_of(write(tmp_path, text))
    assert "daemon.database: " in msg and words in msg and "pw-123" not in msg


def test_relative_paths_follow_the_config_file_not_the_current_directory(tmp_path,
                                                                        monkeypatch):
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "crm.token").write_text("file-secret\n")
    text = (config_text(tmp_path, token='token_file = "crm.token"')
            .replace(f"sqlite:///{tmp_path / 'state.db'}", "sqlite:///state.db")
            + '\n[systems.sage50]\ntype = "sage50fr"\nstate_path = "ids.sqlite"\n'
              'sandbox = { records = 1, options = { path = "sage50.sqlite" } }\n')
    (conf / "config.toml").write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load(Path("../etc/config.toml"))
    assert cfg.daemon.database.startswith("sqlite:////")
    assert Path(cfg.daemon.database[len("sqlite:///"):]).resolve() == conf / "state.db"
    assert cfg.systems["prospect"].model_extra["token"] == "file-secret"
    sage = cfg.systems["sage50"]
    assert Path(sage.model_extra["state_path"]).resolve() == conf / "ids.sqlite"
    assert Path(sage.sandbox.options["path"]).resolve() == conf / "sage50.sqlite"


def test_the_default_database_stays_in_the_working_directory(tmp_path):
    text = config_text(tmp_path).replace(f'database = "sqlite:///{tmp_path / "state.db"}"', "")
    assert load(write(tmp_path, text)).daemon.database == "sqlite:///accord-state.db"


# --- presets: a flow turned off takes its jobs with it -------------------------------------------
def test_sage_preset_contacts_false_drops_the_nightly_contacts_job(tmp_path):
    text = f"""
[daemon]
database = "sqlite:///{tmp_path / 'state.db'}"
[systems.sage50]
type = "sage50fr"
state_path = "ids.sqlite"
sandbox = {{ records = 2 }}
[systems.ssm]
type = "sage_sales_management"
public_key = "sandbox-public"
private_key = "sandbox-private"
sandbox = {{ port = 0, records = 2 }}
[integrations.sg]
left = "sage50"
right = "ssm"
preset = "sage50fr_sales_management"
[integrations.sg.options]
contacts = false
"""
    cfg = load(write(tmp_path, text))
    sg = cfg.integrations["sg"]
    assert "contacts" not in [f.name for f in sg.flows]
    assert [j.name for j in sg.jobs] == []
    # a job of the user's own that names a flow that is not there is still an error
    msg = error_of(write(tmp_path, text + '[[integrations.sg.jobs]]\nname = "mine"\n'
                                          'flow = "contacts"\ncron = "0 1 * * *"\n'))
    assert "integrations.sg.jobs.mine.flow: no flow named 'contacts'" in msg


async def test_check_and_run_refuse_a_bad_schedule_with_one_line_and_exit_2(tmp_path, capsys):
    p = write(tmp_path, config_text(tmp_path, schedule='every = "1 minute"'))
    for command in ("check", "run", "status"):
        code = await cli.amain([command, "--config", str(p)])
        out, err = capsys.readouterr()
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "integrations.ul.schedule.every" in err
        assert "Traceback" not in err
