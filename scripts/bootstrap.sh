#!/usr/bin/env bash
# Creates the project's virtual environment. On a fresh Debian the venv module lacks ensurepip
# until python3-venv is installed, so install it from Debian's packages when it is missing.
set -euo pipefail
venv="$1"
python="${PYTHON:-python3}"
if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
  echo "bootstrap: installing Debian's python3-venv (needed to create $venv)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  $sudo_cmd apt-get install -y -qq "python${ver}-venv" || $sudo_cmd apt-get install -y -qq python3-venv
fi
"$python" -m venv "$venv"
