"""Files that hold a password and that group or others can read are named in a warning with the
``chmod`` that fixes them, as ssh does for keys (SECURITY.md); private ones pass silently."""

from __future__ import annotations

import pytest

from iotswarm_pipelines.export.config_file import parse_config
from iotswarm_pipelines.swarm import launch

OLD_TOOL_CONFIG = "dsn='db.example:1521/cosmos'\nuser='cosmos'\npass='hunter2'\nbucket='b'\n"
NESTED_CONFIG = (
    'oracle: { dsn: "db:1521/COSMOS", user: "u", password: "hunter2" }\naws: { bucket: "b" }\n'
)


@pytest.mark.parametrize(
    "text", [OLD_TOOL_CONFIG, NESTED_CONFIG, "url='postgresql://u:pw@h/db'\nbucket='b'\n"]
)
def test_a_config_file_with_a_password_that_others_can_read_is_named_with_its_fix(
    tmp_path, capsys, text
):
    config = tmp_path / "livecosmos.cfg"
    config.write_text(text)
    config.chmod(0o644)
    parse_config(config)
    err = capsys.readouterr().err
    assert f"{config} holds a password and is readable by others (mode 0644)" in err
    assert f"chmod 600 {config}" in err
    assert "hunter2" not in err and ":pw@" not in err
    config.chmod(0o600)
    parse_config(config)
    assert capsys.readouterr().err == ""


def test_a_config_file_without_a_password_may_be_readable(tmp_path, capsys):
    config = tmp_path / "livecosmos.cfg"
    config.write_text("url='sqlite:///cosmos.sqlite'\nobject_dir='objects'\n")
    config.chmod(0o644)
    parse_config(config)
    assert capsys.readouterr().err == ""


def test_a_password_file_others_can_read_is_named_with_its_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IOTSWARM_DATA_DIR", str(tmp_path))
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    secret.chmod(0o640)
    launch.assemble({}, {"username": "swarm"}, source=None, password_file=str(secret))
    err = capsys.readouterr().err
    assert f"{secret} holds a password and is readable by others (mode 0640)" in err
    assert f"chmod 600 {secret}" in err and "s3cret" not in err
