#!/usr/bin/env bash
# Makes sure the services the tests need are up: PostgreSQL on 127.0.0.1:5432, Mosquitto on
# 127.0.0.1:1883 and Redis on 127.0.0.1:6379 (the Celery broker), and that Debian's headless
# Chromium is installed for the UI tests. What a machine lacks is installed from Debian's packages.
# The S3-compatible server (moto) is started by the tests themselves on a free loopback port, and
# so are Prometheus, the Pushgateway and Alertmanager (installed here, never started as services).
set -euo pipefail
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
apt_updated=0

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  if [ "$apt_updated" -eq 0 ]; then $sudo_cmd apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@"
}

wait_for() {  # port, name
  for _ in $(seq 1 100); do listening "$1" && return 0; sleep 0.2; done
  echo "services: $2 did not start listening on 127.0.0.1:$1" >&2; return 1
}

if ! listening 5432; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  $sudo_cmd pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for 5432 PostgreSQL
  # A fresh cluster only trusts local sockets: give the tests' user a known password.
  $sudo_cmd su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" || true
fi
echo "services: PostgreSQL on 127.0.0.1:5432"

if ! listening 1883; then
  command -v mosquitto >/dev/null || apt_install mosquitto mosquitto-clients
  conf=/etc/mosquitto/mosquitto.conf
  [ -f "$conf" ] || conf=/dev/null
  $sudo_cmd mosquitto -d -c "$conf"
  wait_for 1883 Mosquitto
fi
command -v mosquitto_pub >/dev/null || apt_install mosquitto-clients
echo "services: Mosquitto on 127.0.0.1:1883"

if ! listening 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  $sudo_cmd mkdir -p /var/lib/redis /var/log/redis
  $sudo_cmd redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 6379 Redis
fi
echo "services: Redis on 127.0.0.1:6379"

# The browser tests drive the system's Chromium; nothing downloads a browser of its own.
command -v chromium >/dev/null || apt_install chromium chromium-driver
echo "services: $(chromium --version 2>/dev/null || echo 'Chromium missing')"

# The metrics and alert tests start private instances of Prometheus, the Pushgateway and
# Alertmanager on free loopback ports (iotswarm_tests/prometheus_fixtures.py): only the programs
# are needed. Where the packages start system services of their own (systemd), they are stopped
# and disabled again, so nothing of them outlives the installation.
prometheus_packages=()
command -v prometheus >/dev/null || prometheus_packages+=(prometheus)
command -v prometheus-pushgateway >/dev/null || prometheus_packages+=(prometheus-pushgateway)
command -v prometheus-alertmanager >/dev/null || prometheus_packages+=(prometheus-alertmanager)
if [ "${#prometheus_packages[@]}" -gt 0 ]; then
  apt_install --no-install-recommends "${prometheus_packages[@]}"
  if [ -d /run/systemd/system ]; then
    $sudo_cmd systemctl disable --now "${prometheus_packages[@]}" >/dev/null 2>&1 || true
  fi
fi
echo "services: $(prometheus --version 2>&1 | head -n 1), $(prometheus-pushgateway --version 2>&1 \
  | head -n 1), $(prometheus-alertmanager --version 2>&1 | head -n 1) (started by the tests)"
