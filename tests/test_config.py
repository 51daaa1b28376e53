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
    assert list(cfg.integrations) == ["unleashed-prospect", "sage50-salesmgmt"]
    assert [j.name for j in cfg.integrations["unleashed-prospect"].jobs] == \
        ["fix-account-managers"]
    sage = cfg.integrations["sage50-salesmgmt"]
    assert [f.name for f in sage.flows] == ["companies", "contacts", "products", "invoices"]
    assert sage.schedule.every == "1m"               # the config's schedule over the preset's


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
