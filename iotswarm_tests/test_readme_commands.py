"""Every shell command in README.md and docs/*.md works as written, or names what covers it.

The commands are the ```bash / ```sh blocks (backslash continuations joined, comments dropped).
Each must be in ``RUN`` (this test runs it and it must exit 0) or in ``NOT_RUN`` (why not, and
which test covers it). A command added to the docs in neither table fails here, so the docs
cannot drift from the code without someone deciding how that command is checked.

The commands of one page run in order, as an operator would type them after ``make demo``: in a
scratch copy of the checkout (symlinks to the repository's files, its own ``.demo`` and
``.dagster_home``), with the venv's ``bin`` on ``PATH``, ``DAGSTER_HOME`` as the README's
set-up exports it, a small sample database (two sites, two days) and the README's
``livecosmos.cfg``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from iotswarm_tests.services import require_tcp

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_COPIED = {".git", ".demo", ".dagster_home", "test-artifacts", "livecosmos.cfg"}
COMMAND_TIMEOUT = 120

RUN = {
    # README: set-up of "Day to day" (each command runs in its own shell; the test's environment
    # holds the venv's PATH and this DAGSTER_HOME already)
    "source .venv/bin/activate",
    'export DAGSTER_HOME="$PWD/.dagster_home"',
    "printf '%s\\n' \"url='sqlite:///.demo/cosmos.sqlite'\" \"object_dir='.demo/objects'\" "
    "\"bucket_prefix='fdri/cosmos_swarm'\" \"state_dir='.demo/state'\" > livecosmos.cfg",
    # README: export, backfill, history, switch, swarm, health, reconciliation
    "live-cosmos livecosmos.cfg LEVEL1_SOILMET_30MIN",
    "live-cosmos livecosmos.cfg all --dry-run",
    "dagster job backfill -w workspace.yaml -j cosmos_live_export_job "
    "--partitions LEVEL1_SOILMET_30MIN,LEVEL1_NMDB_1HOUR --noprompt",
    "dagster asset materialize -m iotswarm_pipelines.definitions --select cosmos/history_export "
    '--config-json "{\\"ops\\": {\\"cosmos__history_export\\": {\\"config\\": {\\"table\\": '
    '\\"LEVEL1_SOILMET_30MIN\\", \\"first_day\\": \\"$(date -u -d yesterday +%F)\\", '
    '\\"last_day\\": \\"$(date -u -d yesterday +%F)\\"}}}}"',
    'live-cosmos livecosmos.cfg LEVEL1_SOILMET_30MIN --since "$(date -u -d yesterday +%F)T00:00" '
    '--until "$(date -u -d yesterday +%F)T12:00"',
    "make sensor-stop NAME=cosmos_new_rows_level1_soilmet_30min",
    "make schedule-start NAME=cosmos_every_level1_soilmet_30min",
    "iot-swarm --dry --max-sites 5",
    "iot-swarm --max-sites 3 --per-site 2 --max-cycles 2 --sleep-time 1 --verify",
    "iot-swarm --help",
    "dagster job execute -m iotswarm_pipelines.definitions -j cosmos_health_checks",
    "live-cosmos reconcile livecosmos.cfg LEVEL1_SOILMET_30MIN "
    '--since "$(date -u -d yesterday +%F)"',
    # docs/sample-database.md
    "cosmos-sample",
    "cosmos-sample --start 2024-06-01 --days 7 --sites ALIC1,BALRD --tables LEVEL1_SOILMET_30MIN",
    # docs/operating-in-the-ui.md: the health assets' keys before issue 22, wiped
    "dagster asset wipe --noprompt cosmos/health/{COSMOS_STATUS_1HOUR,LEVEL1_NMDB_1HOUR,"
    "LEVEL1_PRECIP_1MIN,LEVEL1_PRECIP_RAINE_1MIN,LEVEL1_SOILMET_30MIN}",
    # docs/reconciliation.md
    "live-cosmos reconcile livecosmos.cfg all --since 2024-06-01 --until 2024-06-30",
    # README and docs/mqtt-swarm.md: an outage scenario
    "iot-swarm --table LEVEL1_PRECIP_1MIN --devices 50 --mode loop --sleep-time 0.05 "
    "--max-cycles 60 --qos 1 --verify --outage-share 40 --outage-start 10 --outage-minutes 30",
}

# Programs named in NOT_RUN that are not installed here (or are shell builtins).
NOT_INSTALLED = ("docker", "kubectl", "helm", "mkdir", "export", "oauth2-proxy", "mqtt-control")

NOT_RUN = {
    "iot-swarm --max-sites 2 --max-cycles 0 --sleep-time 10": (
        "runs until ^C (devices that answer commands)",
        "test_control_api.py drives the same engine with control on",
    ),
    "mqtt-control --device_id ALIC1 ls": (
        "the team's client: Python 3.12, not on PyPI, not installable in CI",
        "test_control_api.py sends its payloads with paho (fileControl list)",
    ),
    "mqtt-control --device_id ALIC1 get PakBusAddress": (
        "the team's client: Python 3.12, not on PyPI, not installable in CI",
        "test_control_api.py (setting publish)",
    ),
    "mqtt-control --device_id ALIC1 reboot": (
        "the team's client: Python 3.12, not on PyPI, not installable in CI",
        "test_control_api.py (reboot)",
    ),
    "make demo": (
        "a minute, installs Mosquitto when missing, writes the checkout's .demo",
        "test_definitions.py and test_export_assets.py run its jobs; make -n demo checked here",
    ),
    "make test": ("runs this very suite", "CI (.ci/run) runs it; make -n test checked here"),
    "make dev": ("serves the UI until Ctrl-C", "test_ui_e2e.py; make -n dev checked here"),
    "IOTSWARM_UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest iotswarm_tests/test_ui_e2e.py": (
        "a browser test of minutes",
        "itself (test_ui_e2e.py, in make test)",
    ),
    "cosmos-sample --url postgresql+psycopg://postgres@127.0.0.1/cosmos --seed 3": (
        "needs a database named cosmos on the machine's PostgreSQL",
        "test_sample_generator.py (writes to a fresh PostgreSQL database)",
    ),
    "cosmos-sample --follow --speed 60": (
        "appends rows until Ctrl-C",
        "test_sample_generator.py (follow mode)",
    ),
    "live-cosmos reconcile livecosmos.cfg LEVEL1_SOILMET_30MIN --since 2024-06-01 --heal": (
        "walks every day from 2024 to today",
        "test_reconcile_cli.py (--heal)",
    ),
    "iot-swarm --devices 2000 --shards 2 --mode loop --sleep-time 10 --max-cycles 6 --verify": (
        "a minute of publishing from 2,000 devices",
        "test_swarm_cli.py (shards, loop mode, verifier)",
    ),
    "iot-swarm --source export.csv --table LEVEL1_SOILMET_30MIN --mode replay --speed 48 "
    "--max-cycles 0": (
        "needs an export.csv; runs until Ctrl-C",
        "test_swarm_cli.py and test_swarm_data.py (CSV source, replay, stop on SIGINT)",
    ),
    "iot-swarm --swarm-name nightly --resume-session --max-cycles 48 --mode loop": (
        "48 cycles of a minute",
        "test_swarm_sessions.py (resume)",
    ),
    'iot-swarm --source "oracle+oracledb://user@host/service" '
    "--host xxxx-ats.iot.eu-west-2.amazonaws.com --port 443 --alpn x-amzn-mqtt-ca "
    "--ca-file AmazonRootCA1.pem --cert-file device.pem.crt --key-file private.pem.key --qos 1 "
    "--connections shared --mqtt-prefix fdri/cosmos_swarm": (
        "needs Oracle and AWS IoT Core",
        "test_mqtt_client.py (mutual TLS, ALPN through a local proxy) and test_iot_core.py",
    ),
    "iot-swarm --devices 100000 --shards 6 --mode loop --sleep-time 60 --max-cycles 3 "
    "--delay-start --qos 1 --verify --brokers b1:1883,b2:1883,b3:1883,b4:1883,b5:1883,b6:1883 "
    "--source-addresses 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7": (
        "100,000 connections to six brokers for minutes (the scale benchmark)",
        "benchmarks/bench_swarm_scale.py; test_swarm_cli.py (brokers and source addresses)",
    ),
    "iot-swarm --devices 2000 --mode loop --sleep-time 60 --max-cycles 0 --ramp step "
    "--ramp-minutes 300 --ramp-steps 10": (
        "a ramp of ten real minutes that runs until Ctrl-C",
        "test_swarm_scenarios.py (ramp phases against real Mosquitto)",
    ),
    "IOTSWARM_EXECUTOR=celery make dev": (
        "serves the UI until Ctrl-C",
        "test_celery_executor.py",
    ),
    "make workers": ("Celery workers until Ctrl-C", "test_celery_executor.py"),
    "IOTSWARM_EXECUTOR=celery celery -A iotswarm_pipelines.celery_worker worker -n w1@%h -Q "
    '"${IOTSWARM_CELERY_QUEUE:-dagster}" --concurrency 4 --prefetch-multiplier=1': (
        "a worker until Ctrl-C",
        "test_celery_executor.py and test_share_nothing.py",
    ),
    'mkdir -p /srv/dagster_home && ln -sf "$PWD/deploy/dagster.prod.yaml" '
    "/srv/dagster_home/dagster.yaml": (
        "writes outside the checkout (a production host's set-up)",
        "test_prod_instance.py",
    ),
    "export DAGSTER_HOME=/srv/dagster_home IOTSWARM_DEPLOYMENT=prod": (
        "production environment",
        "test_prod_instance.py",
    ),
    "export DAGSTER_PG_HOST=db.example DAGSTER_PG_PORT=5432 DAGSTER_PG_DB=dagster "
    "DAGSTER_PG_USER=dagster DAGSTER_PG_PASSWORD=...": (
        "placeholders for a production database",
        "test_prod_instance.py (the same variables, a real PostgreSQL)",
    ),
    "dagster-webserver -w workspace.yaml & dagster-daemon run -w workspace.yaml": (
        "serves until stopped",
        "test_prod_instance.py and test_ui_e2e.py",
    ),
    "dagster-webserver --read-only -h 0.0.0.0 -p 3000 -w workspace.yaml &": (
        "serves until stopped",
        "test_ui_read_only.py (a real read-only webserver refuses launches, shows runs)",
    ),
    "dagster-webserver -h 127.0.0.1 -p 3001 -w workspace.yaml &": (
        "serves until stopped",
        "test_ui_e2e.py",
    ),
    "oauth2-proxy --config /etc/oauth2-proxy.cfg": (
        "an identity provider's proxy, not installed here",
        "test_deploy_access.py (the proxy's place in deploy/helm/access.yaml)",
    ),
    "docker build -f deploy/Dockerfile -t registry.example.org/fdri/iotswarm-pipelines:0.1.0 .": (
        "no Docker engine on this machine",
        "test_deploy_config.py (the Dockerfile's module, port, user and pins)",
    ),
    "kubectl apply -n iotswarm -f deploy/helm/prerequisites.yaml": (
        "no Kubernetes cluster here",
        "test_deploy_config.py",
    ),
    "helm repo add dagster https://dagster-io.github.io/helm": (
        "no helm binary and no network to the chart repository",
        "test_deploy_config.py (values against Dagster's config schemas)",
    ),
    "helm upgrade --install dagster dagster/dagster --version 1.13.27 -n iotswarm "
    "-f deploy/helm/values.yaml --set 'dagster-user-deployments.deployments[0].image.tag=0.1.0'": (
        "no helm binary and no cluster",
        "test_deploy_config.py",
    ),
    # README "Watch it live": servers that run until stopped, and a swarm without end
    "prometheus-pushgateway --web.listen-address=127.0.0.1:9091 &": (
        "a server on a fixed port, left running",
        "test_metrics_swarm.py (a private Pushgateway on a free port)",
    ),
    "prometheus --config.file=deploy/prometheus/prometheus.yml "
    "--storage.tsdb.path=.demo/prometheus &": (
        "a server on a fixed port, left running",
        "test_metrics_swarm.py and test_metrics_export.py (private Prometheus instances)",
    ),
    "iot-swarm --devices 200 --shards 2 --mode loop --sleep-time 1 --max-cycles 0 --verify "
    "--metrics-port 9464 --pushgateway http://127.0.0.1:9091": (
        "runs until Ctrl-C, on fixed ports",
        "test_metrics_swarm.py (the same options, two shards, scraped by a real Prometheus)",
    ),
    # docs/alerts.md: Prometheus' checks of the shipped files, and the servers on them
    "promtool check config deploy/prometheus/prometheus.yml": (
        "needs Debian's prometheus package",
        "test_alert_rules.py (the same check, failing under CI when promtool is missing)",
    ),
    "promtool test rules deploy/prometheus/tests/*.yml": (
        "needs Debian's prometheus package",
        "test_alert_rules.py (the same unit tests)",
    ),
    "prometheus --config.file=deploy/prometheus/prometheus.yml --storage.tsdb.path=/tmp/prom &": (
        "a server on a fixed port, left running",
        "test_alert_rules.py (promtool check config) and test_alerts_e2e.py (a private one)",
    ),
    "prometheus-alertmanager --config.file=deploy/prometheus/alertmanager.yml &": (
        "a server on a fixed port, left running",
        "test_alert_rules.py (amtool check-config) and test_alerts_e2e.py (a private one)",
    ),
}


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` after a blank, outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_commands(text: str) -> list[str]:
    """Commands of the ```bash and ```sh blocks, continuations joined, comments dropped."""
    commands: list[str] = []
    block: list[str] | None = None
    for line in text.splitlines():
        fence = line.strip()
        if block is None:
            if fence in ("```bash", "```sh", "```shell"):
                block = []
            continue
        if fence.startswith("```"):
            commands += _join_lines(block)
            block = None
            continue
        block.append(line)
    return commands


def _join_lines(lines: list[str]) -> list[str]:
    commands, pending = [], ""
    for line in lines:
        part = _strip_comment(line) if not line.rstrip().endswith("\\") else line.rstrip()[:-1]
        pending = f"{pending} {part.strip()}".strip() if pending else part.strip()
        if line.rstrip().endswith("\\"):
            continue
        if pending:
            commands.append(" ".join(pending.split()))
        pending = ""
    return commands


def page_commands(page: Path) -> list[str]:
    return shell_commands(page.read_text())


def test_commands_are_read_from_shell_blocks_only():
    text = """
```bash
# a comment line
make demo   # trailing comment
iot-swarm --host h \\
  --port 443 --mqtt-prefix 'a#b'
```

```text
not-a-command --x
```

```sh
live-cosmos cfg all
```
"""
    assert shell_commands(text) == [
        "make demo",
        "iot-swarm --host h --port 443 --mqtt-prefix 'a#b'",
        "live-cosmos cfg all",
    ]


def test_every_command_is_run_or_covered():
    listed = {
        command: page.relative_to(REPO).as_posix()
        for page in PAGES
        for command in page_commands(page)
    }
    unknown = [f"{page}: {cmd}" for cmd, page in listed.items() if cmd not in RUN | NOT_RUN.keys()]
    assert not unknown, (
        "commands in the docs that this test neither runs nor lists in NOT_RUN (add each to RUN "
        "if it is quick and safe, else to NOT_RUN with the test that covers it):\n"
        + "\n".join(unknown)
    )
    stale = sorted((RUN | NOT_RUN.keys()) - listed.keys())
    assert not stale, f"RUN/NOT_RUN name commands no page holds any more: {stale}"


def test_the_readme_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert shell_commands(text)[:2] == ["make demo", "make test"]
    assert text.index("```bash") < text.index("\n## ")


def test_relative_links_and_images_resolve():
    """Sections moved between README.md and docs/ keep their pictures and cross-links."""
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, broken


def test_skipped_commands_name_a_program_that_exists():
    """A command not run still names a real program (or make target) of this checkout."""
    for command, (why, covered_by) in NOT_RUN.items():
        assert why and covered_by, command
        words = [w for w in command.split() if "=" not in w]
        program = words[0]
        if program == "make":
            target = words[1]
            run = subprocess.run(
                ["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60
            )
            assert run.returncode == 0, f"make -n {target}: {run.stderr}"
        elif program in NOT_INSTALLED:
            continue  # not installed here, or a shell builtin: named in NOT_RUN's reason
        else:
            path = REPO / program if "/" in program else shutil.which(program, path=_path())
            assert path and Path(path).exists(), f"{program} (in {command!r}) is not installed"


def _path() -> str:
    return f"{REPO / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}"


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A scratch copy of the checkout after ``make demo``: symlinks, its own data and instance."""
    root = tmp_path / "checkout"
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in NOT_COPIED:
            (root / entry.name).symlink_to(entry)
    home = root / ".dagster_home"
    home.mkdir()
    (home / "dagster.yaml").symlink_to(root / "dagster.yaml")
    start = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%d")
    _run(f"cosmos-sample --start {start} --days 2 --sites ALIC1,BALRD", root)
    config = next(c for c in page_commands(REPO / "README.md") if c.endswith("> livecosmos.cfg"))
    _run(config, root)
    return root


def _run(command: str, root: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTSWARM_", "DAGSTER_"))}
    env.update(PATH=_path(), DAGSTER_HOME=str(root / ".dagster_home"))
    run = subprocess.run(
        ["bash", "-c", command],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    tail = "\n".join((run.stdout + run.stderr).splitlines()[-15:])
    assert run.returncode == 0, f"`{command}` exited {run.returncode}:\n{tail}"
    return run


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if any(c in RUN for c in page_commands(p))],
    ids=lambda p: p.relative_to(REPO).as_posix(),
)
def test_the_page_commands_work_as_written(page, checkout):
    if page.name in ("README.md", "mqtt-swarm.md"):
        require_tcp("Mosquitto", "127.0.0.1", 1883)  # where their swarms publish
    ran = []
    for command in page_commands(page):
        if command in RUN:
            _run(command, checkout)
            ran.append(command)
    assert ran
    if page.name == "README.md":
        objects = checkout / ".demo" / "objects" / "fdri" / "cosmos_swarm"
        assert any(objects.rglob("*")), "the README's export stored no object"
        assert (checkout / ".demo" / "state" / "LEVEL1_SOILMET_30MIN.pickle").exists()
