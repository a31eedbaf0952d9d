"""Times `slim_model` and its peak Python memory on growing models.

Usage:

    python benchmarks/bench_surgery.py          # MLPs and ResNet50/101/152
    python benchmarks/bench_surgery.py --tiny   # one small MLP, for CI

Each model gets a third of its hidden units killed, so the surgeon has real
work to do. Memory is the tracemalloc peak (Python and
NumPy allocations, not TensorFlow's own buffers) plus the process max RSS.
"""

import argparse
import resource
import time
import tracemalloc

import keras

from keras_dropneuron.surgery import slim_model


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
    for layer in model.layers:
        if layer.name.endswith(("_1_conv", "_2_conv")):
            kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
            kernel[..., : kernel.shape[-1] // 3] = 0
            bias[: kernel.shape[-1] // 3] = 0
            layer.kernel.assign(kernel)
            layer.bias.assign(bias)
    return model


def measure(label, model):
    tracemalloc.start()
    start = time.perf_counter()
    slim = slim_model(model)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{label:<22} layers={len(model.layers):>4} "
        f"params={model.count_params():>11,} -> {slim.count_params():>11,} "
        f"time={seconds:7.2f}s peak={peak / 2**20:8.1f} MiB maxrss={rss:8.0f} MiB",
        flush=True,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="one small config only")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    if args.tiny:
        measure("mlp w=64 d=2", mlp(64, 2))
        return
    for width, depth in [(128, 2), (256, 4), (512, 8), (1024, 16)]:
        measure(f"mlp w={width} d={depth}", mlp(width, depth))
    for name in ("ResNet50", "ResNet101", "ResNet152"):
        measure(name, resnet(name))


if __name__ == "__main__":
    main()
