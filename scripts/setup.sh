#!/usr/bin/env bash
# Install everything tfos needs on a fresh machine, idempotently: Java and gcc (for Spark, the
# test HDFS and libhdfs.so), a virtual environment at .venv with the pinned, tested package set
# (constraints.txt), tfos itself (editable) with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[setup] $*"; }

# Java runs Spark and the test HDFS; javac/jni.h and gcc build libhdfs.so for tensorflow-io and pyarrow.
missing=()
command -v java >/dev/null 2>&1 && command -v javac >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} with apt-get"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
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
.venv/bin/python -m pip install -q --upgrade -c constraints.txt pip setuptools wheel  # tensorboard needs pkg_resources (setuptools < 81)
log "installing the pinned package set (constraints.txt) and tfos[test,hdfs]"
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test,hdfs]"
log "installing the test HDFS (Hadoop jars, libhdfs.so; cached in \${TFOS_CACHE:-~/.cache/tfos})"
bash scripts/hadoop.sh install
.venv/bin/python -c 'import tensorflow as tf, pyspark, tfos; print("[setup] TensorFlow", tf.__version__, "| PySpark", pyspark.__version__, "| tfos", tfos.__version__)'
