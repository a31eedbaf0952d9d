#!/usr/bin/env bash
# The product on TensorFlow's GPU runtime, in at most about 8 minutes.
#
#   benchmarks/gpu_check.sh          on a machine with a GPU: the tests that touch the
#                                    runtime, then the inference and training benchmarks
#   benchmarks/gpu_check.sh --tiny   a CPU-only smoke run (no tests, smallest benchmarks),
#                                    which CI runs so that the script cannot rot
#
# Figures go to $OUT (default benchmarks/results/gpu): device.json names the device,
# inference.json and training.json hold the benchmark rows. Targets on a GPU: slim speed-up
# at least 0.8 of the multiply-add ratio at batch 256; Li+Lo training step at most 1.05x
# Keras L2's.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-full}
out=${OUT:-benchmarks/results/gpu}
mkdir -p "$out"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

python - > "$out/device.json" <<'PY'
import json

import tensorflow as tf

gpus = tf.config.list_physical_devices("GPU")
details = [tf.config.experimental.get_device_details(gpu) for gpu in gpus]
print(json.dumps({"tensorflow": tf.__version__, "gpus": [g.name for g in gpus], "details": details}))
PY
cat "$out/device.json"

if [ "$mode" = "--tiny" ]; then
    python benchmarks/bench_inference.py --tiny --runtimes keras keras_xla saved_model \
        --repeats 1 --out "$out/inference.json"
    python benchmarks/bench_training_overhead.py --tiny --repeats 1 --out "$out/training.json"
    exit 0
fi

if ! python -c 'import sys, tensorflow as tf; sys.exit(not tf.config.list_physical_devices("GPU"))'; then
    echo "gpu_check: TensorFlow sees no GPU; nothing measured" >&2
    exit 1
fi
start=$SECONDS
timeout 240 python -m pytest -q -x -p no:cacheprovider tests/test_callbacks.py \
    tests/test_mixed_precision.py tests/test_surgery_trust.py tests/test_surgery_applications.py \
    tests/test_export.py
echo "tests: $((SECONDS - start)) s"
timeout 150 python benchmarks/bench_inference.py --models resnet50 --batches 256 \
    --runtimes keras keras_xla saved_model --repeats 5 --out "$out/inference.json"
timeout 90 python benchmarks/bench_training_overhead.py --models lenet-5 resnet50 \
    --out "$out/training.json"
echo "gpu_check: done in $((SECONDS - start)) s; figures in $out"
