"""Does `slim_model(round_to=N)` pay on this machine? Inference time per width rounding.

Usage:

    python benchmarks/bench_rounding.py                 # ResNet50, batch 64
    python benchmarks/bench_rounding.py --tiny          # a small CNN, for CI

A ResNet50 (64x64 inputs, `weights=None`) gets a random 30-60% of the filters inside
every bottleneck dead, so the slim widths land on odd numbers (57, 113, ...). It is
slimmed with `round_to` 1 (every dead filter removed), 8, 16 and 32 (a few dead filters
kept so every width is a multiple), and the compiled `predict_on_batch` of the four slim
models is timed alternately (`_common.alternate`). Printed per rounding: the median time,
the multiply-adds, time relative to `round_to=1` and time per multiply-add relative to it.
Rounding pays only where the time falls, not just the time per multiply-add.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _common  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dropneuron import slim_model  # noqa: E402

ROUNDINGS = (1, 8, 16, 32)


def resnet(tiny, rng):
    if tiny:
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Conv2D(48, 3, activation="relu", name="c1_1_conv")(inputs)
        x = keras.layers.Conv2D(40, 3, activation="relu", name="c2_2_conv")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(10)(x))
    else:
        model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    for layer in model.layers:
        if layer.name.endswith(("_1_conv", "_2_conv")):
            kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
            width = kernel.shape[-1]
            dead = rng.choice(width, int(width * rng.uniform(0.3, 0.6)), replace=False)
            kernel[..., dead] = 0
            bias[dead] = 0
            layer.kernel.assign(kernel)
            layer.bias.assign(bias)
    return model


def main(argv=None):
    args = _common.parser(__doc__, repeats=9).parse_args(argv)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = resnet(args.tiny, rng)
    batch = 8 if args.tiny else 64
    x = rng.standard_normal((batch, *model.input_shape[1:])).astype("float32")
    slims, macs = {}, {}
    for n in ROUNDINGS:
        slim, report = slim_model(model, round_to=n, return_report=True)
        slims[f"round_to={n}"] = slim
        macs[f"round_to={n}"] = report.totals()["macs_after"]
    times = _common.alternate(
        {name: (lambda s=slim: s.predict_on_batch(x)) for name, slim in slims.items()},
        args.repeats,
    )
    base = "round_to=1"
    rows = [
        {
            "rounding": name,
            "ms": 1000 * times[name],
            "macs": macs[name],
            "time_vs_1": times[name] / times[base],
            "time_per_mac_vs_1": (times[name] / macs[name]) / (times[base] / macs[base]),
        }
        for name in slims
    ]
    _common.print_table(rows, ["rounding", "ms", "macs", "time_vs_1", "time_per_mac_vs_1"])
    _common.finish(args, rows, batch=batch)


if __name__ == "__main__":
    main()
