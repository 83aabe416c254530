#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine and run them.
# Usage: bash tests/run.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
# System packages: PostgreSQL for the tests, Chromium for the browser tests, Pango and fonts for PDF forms, poppler for reading them back.
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
for pkg in chromium libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core poppler-utils; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
eval "$(bash .ci/start-postgres)"
export MOTCUA_TEST_POSTGRES_URL
exec .venv/bin/python -m pytest -n 2 "$@"
