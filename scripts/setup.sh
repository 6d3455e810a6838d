#!/usr/bin/env bash
# Install everything tfos needs on a fresh machine, idempotently: Java (for Spark and the
# test HDFS), a virtual environment at .venv with the pinned, tested package set
# (constraints.txt), tfos itself (editable) with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[setup] $*"; }

if ! command -v java >/dev/null 2>&1; then
  log "java not found: installing OpenJDK 17 with apt-get"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q openjdk-17-jre-headless
fi
java -version 2>&1 | head -n 1

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "[setup] tfos needs Python >= 3.11 (pyspark 4.3 does); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
log "installing the pinned package set (constraints.txt) and tfos[test,hdfs]"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test,hdfs]"
.venv/bin/python -c 'import tensorflow as tf, pyspark, tfos; print("[setup] TensorFlow", tf.__version__, "| PySpark", pyspark.__version__, "| tfos", tfos.__version__)'
