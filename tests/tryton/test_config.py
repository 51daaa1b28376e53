"""The README's way of pointing accord at a Tryton server loads and expands the preset."""
from __future__ import annotations

from connectors.tryton import TrytonConnector
from daemon.config import load


def test_the_readme_config_for_tryton_loads(tmp_path):
    (tmp_path / "tryton.password").write_text("s3cret\n")
    path = tmp_path / "config.toml"
    path.write_text(f"""
[daemon]
database = "sqlite:///{tmp_path / 'state.db'}"

[systems.tryton]
type = "tryton"
base_url = "https://erp.example.com:8000"
database = "tryton"
login = "accord"
password_file = "{tmp_path / 'tryton.password'}"

[systems.prospect]
type = "prospect_crm"
token = "t"

[integrations.tryton-prospect]
left = "tryton"
right = "prospect"
preset = "tryton_crm"

[integrations.tryton-prospect.options]
create_in_tryton = false
""")
    cfg = load(str(path))
    spec = cfg.systems["tryton"].model_dump(exclude={"type", "sandbox"})
    settings = TrytonConnector.Settings.model_validate(spec)
    assert settings.password.get_secret_value() == "s3cret"     # read from password_file
    assert "s3cret" not in repr(settings)
    integ = cfg.integrations["tryton-prospect"]
    flows = {f.name: f for f in integ.flows}
    assert set(flows) == {"companies", "contacts"}
    assert flows["companies"].create.to_left.mode == "never"
    assert flows["companies"].delete.to_right.action == "delete"
    assert flows["companies"].delete.to_left.action == "ignore"
    owned = {f.name for f in flows["companies"].fields if f.direction == "left_to_right"}
    assert owned == {"address_line1", "address_line2", "address_city", "address_postcode",
                     "address_country"}
