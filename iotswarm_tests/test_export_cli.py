"""The live-cosmos command line: the old config format, table spellings and exit codes."""

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest

from iotswarm_pipelines.cosmos import catalogue
from iotswarm_pipelines.export import cli
from iotswarm_pipelines.export.config_file import ConfigFileError, parse_config
from iotswarm_pipelines.export.pipeline import utc_now
from iotswarm_pipelines.export.state_store import StateStore
from iotswarm_pipelines.export.watermarks import bucket_end
from iotswarm_tests.export_fixtures import SOILMET, insert_rows, make_rows, sqlite_url
from iotswarm_tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]
LIVE_COSMOS = Path(sys.executable).with_name("live-cosmos")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def database(tmp_path) -> str:
    url = sqlite_url(tmp_path)
    recent = utc_now().replace(second=0, microsecond=0) - timedelta(hours=1)
    for table in catalogue.TABLE_NAMES:
        insert_rows(url, table, make_rows(table, "ALIC1", [recent, recent + timedelta(minutes=30)]))
    return url


def config_for(tmp_path: Path, url: str, **extra: str) -> Path:
    lines = [
        f"url='{url}'",
        f"object_dir='{tmp_path / 'objects'}'",
        f"state_dir='{tmp_path / 'state'}'",
        "bucket_prefix='fdri/cosmos_swarm'",
    ]
    lines += [f"{key}='{value}'" for key, value in extra.items()]
    config = write(tmp_path / "livecosmos.cfg", "\n".join(lines) + "\n")
    config.chmod(0o600)  # it may hold a password: private, as SECURITY.md asks
    return config


def run(*args: str, command=(str(LIVE_COSMOS),)) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_old_tool_config_becomes_an_oracle_url_with_quoted_credentials(tmp_path):
    text = (
        "dsn='dbhost:1521/COSMOS'\nuser='uploader'\npass='p@ss/w:rd'\n"
        "# the old tool's file\n\nbucket='ukceh-fdri'  # S3\nsites='alic1, BALRD'\nbatch_size=10\n"
    )
    path = write(tmp_path / "c", text)
    config = parse_config(path)
    assert config.url == "oracle+oracledb://uploader:p%40ss%2Fw%3Ard@dbhost:1521/COSMOS"
    assert config.schema_name == "COSMOS"
    assert (config.bucket, config.options["sites"], config.options["batch_size"]) == (
        "ukceh-fdri",
        ["alic1", "BALRD"],  # matched against the source's IDs when the run starts
        10,
    )
    assert "p@ss" not in repr(config) and "p%40ss" not in repr(config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("url='sqlite://'\nbucket='b'\ncolour='red'\n", r"line 3: unknown key 'colour'"),
        ("url='sqlite://'\nbucket='b'\nthis is not a setting\n", r"line 3: not a key='value'"),
        ("dsn='h/x'\npass='secret'\nbucket='b'\n", r"missing user"),
        ("url='sqlite://'\n", r"exactly one destination"),
        ("url='sqlite://'\nbucket='b'\nbatch_size='0'\n", r"line 3: batch_size must be"),
        ("url='sqlite://'\nbucket='b'\nfallback_hours='soon'\n", r"line 3: fallback_hours"),
        ("url='sqlite://'\nurl='sqlite://'\nbucket='b'\n", r"line 2: url is set twice"),
    ],
)
def test_bad_config_files_name_the_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "bad.cfg", text)
    with pytest.raises(ConfigFileError, match=message) as raised:
        parse_config(path)
    assert str(path) in str(raised.value)


def test_a_malformed_password_line_is_reported_without_the_password(tmp_path, capsys):
    path = write(tmp_path / "c", "dsn='h'\nuser='u'\npass='hunter2\nbucket='b'\n")
    assert cli.run([str(path), SOILMET]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "line 3" in err and "hunter2" not in err


def test_legacy_table_name_exports_and_prints_the_summary(tmp_path, database):
    result = run(str(config_for(tmp_path, database)), "LEVEL_1_SOILMET_30MIN")
    assert result.returncode == 0, result.stderr
    assert "LEVEL1_SOILMET_30MIN: 2 rows, 2 payloads, 2 objects" in result.stdout
    assert "ALIC1" in result.stdout
    assert StateStore(state_dir=str(tmp_path / "state")).load(catalogue.SOILMET_30MIN)["sites"][
        "ALIC1"
    ]
    assert len(list((tmp_path / "objects" / "fdri" / "cosmos_swarm" / "ALIC1").iterdir())) == 1


def test_all_exports_every_table(tmp_path, capsys):
    # Per table, the two periods of one closed two-period batch (batches align to the cadence).
    url = sqlite_url(tmp_path)
    for table in catalogue.TABLE_NAMES:
        cadence = catalogue.get_table(table).cadence
        end = bucket_end(utc_now() - timedelta(hours=2), 2 * cadence)
        insert_rows(url, table, make_rows(table, "ALIC1", [end - cadence, end]))
    config = config_for(tmp_path, url, batch_size="2", fallback_hours="6")
    assert cli.run([str(config), "all"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    for table in catalogue.TABLE_NAMES:
        assert f"{table}: 2 rows, 1 payloads, 1 objects" in out


def test_runs_land_in_dagster_home_as_runs_of_the_live_export_job(
    tmp_path, database, monkeypatch, capsys
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert cli.run([str(config_for(tmp_path, database)), SOILMET]) == cli.EXIT_OK
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
    assert run.job_name == "cosmos_live_export_job"  # not __ephemeral_asset_job__
    assert run.tags["iotswarm/trigger"] == "cli" and run.tags["dagster/partition"] == SOILMET


def test_unknown_table_and_bad_replay_time_exit_2(tmp_path, database, capsys):
    config = str(config_for(tmp_path, database))
    assert cli.run([config, "LEVEL1_NOPE"]) == cli.EXIT_BAD_INPUT
    assert cli.run([config, SOILMET, "--since", "yesterday"]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "unknown COSMOS table" in err[0] and "ISO 8601" in err[1]


def test_unreachable_source_exits_2_with_one_line(tmp_path):
    url = f"postgresql+psycopg://postgres:topsecret@127.0.0.1:{free_port()}/cosmos"
    module = (sys.executable, "-m", "iotswarm_pipelines.livecosmos")
    result = run(str(config_for(tmp_path, url)), SOILMET, command=module)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "topsecret" not in result.stderr and "Traceback" not in result.stderr


def test_a_failed_export_exits_1(tmp_path, database):
    config = config_for(tmp_path, database)
    (tmp_path / "objects").write_text("a file where the object folder should be")
    result = run(str(config), SOILMET)
    assert result.returncode == 1
    assert "ENOTDIR: Not a directory" in result.stderr  # found before any upload, by its cause
    assert "Traceback" not in result.stderr
