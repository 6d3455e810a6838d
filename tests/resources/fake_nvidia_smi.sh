#!/bin/sh
# Stand-in for nvidia-smi in tests: prints $FAKE_NVIDIA_SMI_DIR/gpus.csv for --query-gpu and
# $FAKE_NVIDIA_SMI_DIR/apps.csv (if any) for --query-compute-apps, as
# `nvidia-smi --query-...=... --format=csv,noheader,nounits` would.
case "$*" in
  *--query-gpu=*) cat "$FAKE_NVIDIA_SMI_DIR/gpus.csv" ;;
  *--query-compute-apps=*) [ -f "$FAKE_NVIDIA_SMI_DIR/apps.csv" ] && cat "$FAKE_NVIDIA_SMI_DIR/apps.csv"; exit 0 ;;
  *) echo "fake nvidia-smi: unsupported arguments: $*" >&2; exit 2 ;;
esac
