"""Times `slim_model` and its peak Python memory on growing models.

Usage:

    python benchmarks/bench_surgery.py          # MLPs and ResNet50/101/152
    python benchmarks/bench_surgery.py --tiny   # one small MLP, for CI

Each model gets a third of its hidden units killed, so the surgeon has real
work to do. Time is the median of `--repeats` runs without tracing (tracemalloc
slows Python down); memory comes from one extra traced run: the tracemalloc peak
(Python and NumPy allocations, not TensorFlow's own buffers) plus the process max
RSS. A least-squares line through (layers, seconds) of each family tells whether
the cost grows linearly in the number of layers (target), and the ResNet50 time
is compared with the 5 s target; both are printed, never asserted. Runs with
and without verification alternate; `verify_share` is the part of the time
spent verifying (target: at most 10% on ResNet50).
"""

import os
import resource
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import _models  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dropneuron.surgery import slim_model  # noqa: E402

RESNET50_TARGET_S = 5.0


def mlp(width, depth):
    inputs = keras.Input((width,))
    x = inputs
    for i in range(depth):
        x = keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="head")(x))
    for layer in model.layers[2:]:
        kernel = layer.kernel.numpy()
        kernel[: kernel.shape[0] // 3] = 0
        layer.kernel.assign(kernel)
    return model


def resnet(name):
    model = getattr(keras.applications, name)(weights=None, input_shape=(64, 64, 3), classes=10)
    # A third of the filters inside every bottleneck become constant zero.
    return _models.kill_bottleneck_filters(model, 1 / 3)


def measure(label, family, model, repeats):
    times, unverified = [], []
    for _ in range(repeats):  # alternated, so both sides see the same machine
        start = time.perf_counter()
        slim = slim_model(model)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        slim_model(model, verify=False)
        unverified.append(time.perf_counter() - start)
    tracemalloc.start()
    slim_model(model)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The surgery must stay exact at every size: compare outputs on random inputs.
    x = np.random.default_rng(0).standard_normal((2, *model.input_shape[1:])).astype("float32")
    expected = np.asarray(model(x))
    max_abs_diff = float(np.max(np.abs(np.asarray(slim(x)) - expected)))
    row = {
        "model": label,
        "max_abs_diff": max_abs_diff,
        "exact": max_abs_diff <= 1e-5 * (1 + float(np.max(np.abs(expected)))),
        "family": family,
        "layers": len(model.layers),
        "params": model.count_params(),
        "params_slim": slim.count_params(),
        "seconds": float(np.median(times)),
        "seconds_unverified": float(np.median(unverified)),
        # Share of slim_model's time spent verifying (target: at most 10%).
        "verify_share": 1 - float(np.median(unverified)) / float(np.median(times)),
        "peak_mib": peak / 2**20,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(
        f"{label:<22} layers={row['layers']:>4} "
        f"params={row['params']:>11,} -> {row['params_slim']:>11,} "
        f"time={row['seconds']:7.2f}s (verify {row['verify_share']:.0%}) "
        f"peak={row['peak_mib']:8.1f} MiB "
        f"maxrss={row['maxrss_mib']:8.0f} MiB exact={row['exact']}",
        flush=True,
    )
    return row


def linear_fits(rows):
    """Per family: seconds per layer, intercept, R^2 and log-log slope (1 = linear)."""
    fits = {}
    for family in dict.fromkeys(r["family"] for r in rows):
        layers = np.array([r["layers"] for r in rows if r["family"] == family], float)
        seconds = np.array([r["seconds"] for r in rows if r["family"] == family])
        if len(layers) < 2:
            continue
        slope, intercept = np.polyfit(layers, seconds, 1)
        residual = seconds - (slope * layers + intercept)
        r2 = 1 - residual.var() / seconds.var() if seconds.var() > 0 else 1.0
        fits[family] = {
            "ms_per_layer": 1000 * float(slope),
            "intercept_s": float(intercept),
            "r2": float(r2),
            "loglog_slope": float(np.polyfit(np.log(layers), np.log(seconds), 1)[0]),
        }
        print(
            f"{family}: {fits[family]['ms_per_layer']:.1f} ms/layer, "
            f"R^2={r2:.3f}, log-log slope={fits[family]['loglog_slope']:.2f} (1 = linear)"
        )
    return fits


def main(argv=None):
    args = _common.parser(__doc__, repeats=3).parse_args(argv)
    keras.utils.set_random_seed(0)
    rows = []
    if args.tiny:
        rows.append(measure("mlp w=64 d=2", "mlp", mlp(64, 2), args.repeats))
        rows.append(measure("mlp w=64 d=4", "mlp", mlp(64, 4), args.repeats))
    else:
        for width, depth in [(128, 2), (256, 4), (512, 8), (1024, 16)]:
            label = f"mlp w={width} d={depth}"
            rows.append(measure(label, "mlp", mlp(width, depth), args.repeats))
        for name in ("ResNet50", "ResNet101", "ResNet152"):
            rows.append(measure(name, "resnet", resnet(name), args.repeats))
    fits = linear_fits(rows)
    resnet50 = [r["seconds"] for r in rows if r["model"] == "ResNet50"]
    if resnet50:
        verdict = "meets" if resnet50[0] < RESNET50_TARGET_S else "misses"
        print(f"ResNet50: {resnet50[0]:.2f} s, {verdict} the {RESNET50_TARGET_S:.0f} s target")
    _common.finish(args, rows, fits=fits)


if __name__ == "__main__":
    main()
