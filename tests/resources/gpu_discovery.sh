#!/bin/sh
# Spark GPU discovery script reporting FAKE GPU addresses, for tests on machines without GPUs.
# Every Spark worker on this host runs it once at start-up; each call claims the next
# $FAKE_GPUS_PER_WORKER addresses (default 1) under $FAKE_GPU_CLAIM_DIR, so workers on one host
# report distinct addresses, as on a real multi-GPU host where each worker owns some GPUs.
set -e
dir="${FAKE_GPU_CLAIM_DIR:?set FAKE_GPU_CLAIM_DIR}"
per="${FAKE_GPUS_PER_WORKER:-1}"
mkdir -p "$dir"
slot=0
while ! mkdir "$dir/worker-$slot" 2>/dev/null; do slot=$((slot + 1)); done
first=$((slot * per))
addrs=""
i=0
while [ "$i" -lt "$per" ]; do
  addrs="$addrs${addrs:+,}\"$((first + i))\""
  i=$((i + 1))
done
echo "{\"name\": \"gpu\", \"addresses\": [$addrs]}"
