#!/usr/bin/env bash
# Fresh machine -> MNIST trained on a local Spark cluster: installs (scripts/setup.sh), converts the
# shipped MNIST sample to TFRecords on the local file system, trains a CNN on 2 TF workers
# (InputMode.TENSORFLOW, MultiWorkerMirroredStrategy) and prints "test accuracy: 0.XXXX" last.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
WORK=${TFOS_WORK:-$PWD/work/quickstart}
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
PY="$OLDPWD/.venv/bin/python"
"$PY" "$OLDPWD/examples/mnist/mnist_data_setup.py" --output mnist --format tfr
exec "$PY" "$OLDPWD/examples/mnist/mnist_tf.py" --cluster_size 2 --images_labels mnist/train \
  --test_images_labels mnist/test --model_dir mnist_model --export_dir mnist_export --epochs "${EPOCHS:-4}" --plot
