#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian machine: the system packages deployflow's sandbox and tests
# run for real (HAProxy, nginx, Prometheus, PostgreSQL, Node.js for the TypeScript check fixture, chromium
# for the browser tests), uv, and
# the project environment from uv.lock. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The browser tests (tests/browser) drive Debian's chromium through Playwright: no browser download.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! command -v uv >/dev/null 2>&1 && [ ! -x .deployflow/tools/bin/uv ]; then
  python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

UV="$(command -v uv || true)"
if [ -z "$UV" ]; then
  if [ ! -x .deployflow/tools/bin/uv ]; then
    echo "bootstrap: installing uv from PyPI into .deployflow/tools"
    python3 -m venv .deployflow/tools
    .deployflow/tools/bin/pip install -q uv
  fi
  UV="$PWD/.deployflow/tools/bin/uv"
fi

# Compiled once here: every Prefect server, worker, flow run and CLI process then imports from
# bytecode instead of compiling Prefect's sources again (machines that set PYTHONDONTWRITEBYTECODE
# never keep what they compile, and each such process would pay over a second of CPU).
"$UV" sync --frozen --quiet --compile-bytecode
echo "$UV" > .deployflow/uv-path
