#!/usr/bin/env bash
# The whole test suite, real Hive Metastore / Spark / Trino included. Sets everything up first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m pytest -q "$@"
