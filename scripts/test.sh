#!/usr/bin/env bash
# Install everything (scripts/setup.sh), then lint and run the whole test suite against a real
# Spark standalone cluster and a real HDFS on 127.0.0.1. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -ra "$@"
