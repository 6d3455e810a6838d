#!/usr/bin/env bash
# Every throughput and memory target of the feed and of InputMode.TENSORFLOW training (issue 15)
# in one recorded run, one benchmark after the other on an otherwise idle host:
#   (a) + (c)  cached RDD of Python rows through next_batch, 60,000 and 1,000,000 rows, with peak RSS
#   (b)        cached DataFrame through the tf.data adapter vs Spark's mapInArrow scan, 200,000 rows
#   (d)        inference over a cached and a computed RDD vs a direct mapPartitions, 200,000 rows
#   (e)        TF-mode training through tfos vs launched by hand: MNIST CNN, CIFAR-10 CNN (both
#              MultiWorkerMirroredStrategy) and the Criteo model under ParameterServerStrategy
# This host's 2 shared cores change speed by 20-40% from one minute to the next, so every comparison
# alternates its paths over 3-4 rounds (the (a) and (b) logs also give each round's ratio and their
# median), and the TF-mode comparisons time 300 (MNIST) and 1,000 (Criteo) steps per epoch.
# Each benchmark's full output goes to OUT_DIR/<name>.log; the verdict lines are printed at the end.
#
#   bash benchmarks/throughput_suite.sh [OUT_DIR]      # about 25 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${1:-${TMPDIR:-/tmp}/tfos-throughput-$(date -u +%Y%m%dT%H%MZ)}
mkdir -p "$OUT"
{
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)')"
  echo "start $(date -u +%FT%TZ); $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/run.txt"

run() {
  local name=$1
  shift
  echo "== $name ($(date -u +%TZ), load $(cut -d' ' -f1 /proc/loadavg)): $*" | tee -a "$OUT/run.txt"
  "$@" >"$OUT/$name.log" 2>&1 || echo "   $name exited with $?" | tee -a "$OUT/run.txt"
}

run a_c $PY benchmarks/feed_throughput.py --sizes 60000,1000000 --only a,c --partitions 4 --repeats 4 --a-inputs cached
run b $PY benchmarks/feed_throughput.py --sizes 200000 --only b --repeats 4
run d $PY benchmarks/feed_throughput.py --sizes 200000 --only d --partitions 4 --batch-size 256 --repeats 3
run e_mnist $PY benchmarks/tf_mode_throughput.py --model mnist --repeats 3 --steps 300
run e_cifar10 $PY benchmarks/tf_mode_throughput.py --model cifar10 --repeats 3 --steps 30 --epochs 3
run e_criteo_ps $PY benchmarks/tf_mode_throughput.py --model criteo-ps --repeats 3 --steps 1000 --epochs 4

echo "end $(date -u +%FT%TZ); load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/run.txt"
echo
echo "verdicts (full output in $OUT):"
for f in "$OUT"/*.log; do grep -E "PASS|FAIL|tfos / by hand" "$f" | grep -v "^{" | sed "s|^|$(basename "$f" .log): |"; done
