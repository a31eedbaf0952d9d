#!/usr/bin/env bash
# The product on a GPU, in at most about 8 minutes: TensorFlow's runtime, or Keras's JAX or
# PyTorch backend.
#
#   benchmarks/gpu_check.sh          on a machine with a GPU: the tests that touch the
#                                    runtime, then the inference and training benchmarks
#   benchmarks/gpu_check.sh --tiny   a CPU-only smoke run (no tests, smallest benchmarks),
#                                    which CI runs so that the script cannot rot
#   benchmarks/gpu_check.sh --backend jax           the same on Keras's JAX backend (or torch);
#   benchmarks/gpu_check.sh --backend jax --tiny    TensorFlow need not be installed
#
# Figures go to $OUT (default benchmarks/results/gpu): device.json names the device,
# inference.json and training.json hold the benchmark rows (device_jax.json,
# inference_jax.json, training_jax.json with --backend jax, and so on). Targets on a GPU:
# slim speed-up at least 0.8 of the multiply-add ratio at batch 256; Li+Lo training step at
# most 1.05x Keras L2's. With --backend, a failing test or benchmark is reported and the
# rest still runs; the script then exits 1. GPU_CHECK_ALLOW_CPU=1 runs the full mode without a
# GPU (to check the script itself).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=full
backend=tensorflow
while [ $# -gt 0 ]; do
    case "$1" in
    --tiny) mode=--tiny ;;
    --backend) backend=${2:?--backend needs jax, torch or tensorflow}; shift ;;
    --backend=*) backend=${1#--backend=} ;;
    *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
out=${OUT:-benchmarks/results/gpu}
mkdir -p "$out"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

if [ "$backend" != tensorflow ]; then
    case "$backend" in
    jax | torch) ;;
    *) echo "gpu_check: --backend must be jax, torch or tensorflow, not $backend" >&2; exit 2 ;;
    esac
    export KERAS_BACKEND=$backend
    # JAX would otherwise take 75% of the GPU's memory at start.
    export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
    suffix=_$backend
    # Bounded: a backend that hangs while it looks for its devices must not hold the GPU.
    timeout 120 python - > "$out/device$suffix.json" <<'PY'
import json
import platform

import keras

backend = keras.backend.backend()
info = {"backend": backend, "keras": keras.__version__, "python": platform.python_version()}
if backend == "jax":
    import jax

    devices = jax.devices()
    info |= {
        "jax": jax.__version__,
        "devices": [str(d) for d in devices],
        "gpus": [d.device_kind for d in devices if d.platform == "gpu"],
    }
else:
    import torch

    info |= {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    }
print(json.dumps(info))
PY
    cat "$out/device$suffix.json"
    if [ "$mode" = "--tiny" ]; then
        python benchmarks/bench_inference.py --backend "$backend" --tiny --repeats 1 \
            --out "$out/inference$suffix.json"
        python benchmarks/bench_training_overhead.py --backend "$backend" --tiny --repeats 1 \
            --out "$out/training$suffix.json"
        exit 0
    fi
    if [ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ] && ! python -c 'import json, sys
sys.exit(not json.load(open(sys.argv[1]))["gpus"])' "$out/device$suffix.json"; then
        echo "gpu_check: the $backend backend sees no GPU; nothing measured" >&2
        exit 1
    fi
    start=$SECONDS
    failed=""
    parallel=()  # pytest-xdist, where installed: four workers share the GPU
    if python -c 'import xdist' 2>/dev/null; then parallel=(-n 4); fi
    timeout 90 python -m pytest -q -p no:cacheprovider "${parallel[@]}" tests/test_callbacks.py \
        tests/test_surgery_trust.py tests/test_distillation.py tests/test_backends.py || failed+=" tests"
    echo "tests ($backend): $((SECONDS - start)) s"
    timeout 120 python benchmarks/bench_inference.py --backend "$backend" --models resnet50 \
        --batches 1 256 --repeats 7 --out "$out/inference$suffix.json" || failed+=" inference"
    timeout 150 python benchmarks/bench_training_overhead.py --backend "$backend" \
        --models lenet-5 resnet50 --out "$out/training$suffix.json" || failed+=" training"
    echo "gpu_check ($backend): done in $((SECONDS - start)) s; figures in $out;" \
        "failed:${failed:- nothing}"
    [ -z "$failed" ]
    exit
fi

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
