"""PruneCallback's share of an epoch, masks active, on MNIST.

Usage:

    python benchmarks/bench_callback_overhead.py                  # LeNet-300-100 and LeNet-5
    python benchmarks/bench_callback_overhead.py --samples 60000  # full epochs for both
    python benchmarks/bench_callback_overhead.py --tiny           # 128 random samples, for CI
    python benchmarks/bench_callback_overhead.py --backend jax    # or torch, tensorflow

An epoch is all 60000 MNIST training images for LeNet-300-100 (235 steps of 256) and the
first 6400 for LeNet-5 (100 steps of 64; a full LeNet-5 epoch takes minutes on 2 cores).

Two copies of each model (Li+Lo regularized by `regularize_model`, half of every kernel's
weights zeroed so that the callback has masks to keep applied after every step) train one
epoch at a time, alternately with and without `PruneCallback(threshold=1e-2)`. Each epoch
with the callback includes everything it does during training: reading the masks at the
start, re-applying them after every batch, pruning and computing `sparsity` and
`alive_units` at the end of the epoch.

Two figures:

- `share_end_to_end`: (median epoch with - median epoch without) / median epoch with. It
  includes Keras's cost of calling a batch hook at all, but on a busy machine its noise can
  exceed the effect (it can even be negative).
- `share_in_hooks`: time spent inside the callback's hooks / epoch time with the callback;
  low noise, but misses Keras's per-batch dispatch. On JAX the per-step masking runs
  inside the jitted step, so only `share_end_to_end` sees it.

`--backend` picks the Keras backend (read before Keras is imported).
"""

import os
import pathlib
import time

import _backend_choice

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if __name__ == "__main__":
    _backend_choice.choose_from_argv()

import _common  # noqa: E402
import _models  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_dropneuron import PruneCallback, regularize_model  # noqa: E402
from keras_dropneuron.experiments.data import load_mnist  # noqa: E402

MNIST = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
BATCH_SIZES = {"lenet-300-100": 256, "lenet-5": 64}  # as in the experiments
SAMPLES = {"lenet-300-100": 60000, "lenet-5": 6400}


TimedPruneCallback = _common.timed(PruneCallback)


def data(name: str, mnist: str, samples: int, tiny: bool) -> tuple[np.ndarray, np.ndarray]:
    """`samples` MNIST images shaped for model `name` (random images when `tiny`)."""
    if tiny:
        rng = np.random.default_rng(0)
        x = rng.random((samples, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, size=samples)
    else:
        (x, y), _ = load_mnist(mnist)
        x, y = x[:samples], y[:samples]
    return (x.reshape(len(x), -1) if name == "lenet-300-100" else x[..., None]), y


def half_zeroed(model: keras.Model, rng: np.random.Generator) -> keras.Model:
    """Li+Lo regularized copy of `model` with half of each kernel's weights set to zero."""
    model = regularize_model(model, li=1e-4, lo=1e-4)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            kernel = layer.kernel.numpy()
            layer.kernel.assign(np.where(rng.random(kernel.shape) < 0.5, 0, kernel))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


class EpochTimes(keras.callbacks.Callback):
    """Wall time of each epoch of one `fit`."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.seconds = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def measure(
    name: str, x: np.ndarray, y: np.ndarray, repeats: int, epochs_per_fit: int = 3
) -> dict:
    """Epoch times of the model `name` with and without `PruneCallback`, alternated."""
    rng = np.random.default_rng(0)
    build = _models.lenet_300_100 if name == "lenet-300-100" else _models.lenet_5
    base = build()
    models = {"with": half_zeroed(base, rng), "without": half_zeroed(base, rng)}
    callback = TimedPruneCallback(threshold=1e-2)
    seconds = {"with": [], "without": []}
    in_hooks, fit_begin = [], []
    batch_size = BATCH_SIZES[name]
    # Each sample is a multi-epoch fit; its first epoch pays for tracing (the
    # callback retraces the train step once per fit to hook its masks in), so
    # only the later, steady-state epochs are compared. Sides alternate.
    for r in range(repeats):
        for side in ("with", "without") if r % 2 else ("without", "with"):
            callback.seconds = 0.0
            timer = EpochTimes()
            models[side].fit(
                x,
                y,
                batch_size=batch_size,
                epochs=epochs_per_fit,
                verbose=0,
                callbacks=[callback, timer] if side == "with" else [timer],
            )
            seconds[side].extend(timer.seconds[1:])
            if side == "with":
                in_hooks.append(callback.seconds / epochs_per_fit)
                fit_begin.append(timer.seconds[0] - float(np.median(timer.seconds[1:])))
    with_s, without_s = (float(np.median(seconds[s])) for s in ("with", "without"))
    return {
        "model": name,
        "backend": keras.backend.backend(),
        "samples": len(x),
        "steps": -(-len(x) // batch_size),
        "epoch_with_s": with_s,
        "epoch_without_s": without_s,
        "hooks_s": float(np.median(in_hooks)),
        "share_end_to_end": (with_s - without_s) / with_s,
        "share_in_hooks": float(np.median(in_hooks)) / with_s,
        "first_epoch_extra_s": float(np.median(fit_begin)),
        "sparsity": float(callback.figures()["sparsity"]),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = _common.parser(__doc__, repeats=5)
    p.add_argument("--mnist", default=str(MNIST), help="local mnist.npz")
    p.add_argument("--samples", type=int, help="training samples per epoch (default: see above)")
    p.add_argument("--models", nargs="+", default=list(BATCH_SIZES), choices=list(BATCH_SIZES))
    _backend_choice.add_argument(p)
    args = p.parse_args(argv)
    _backend_choice.check(p, args)
    keras.utils.set_random_seed(0)
    rows = []
    for name in args.models:
        samples = 128 if args.tiny else args.samples or SAMPLES[name]
        x, y = data(name, args.mnist, samples, args.tiny)
        rows.append(measure(name, x, y, args.repeats))
        print(f"{name}: done", flush=True)
    _common.print_table(rows, list(rows[0]))
    _common.finish(args, rows, backend=args.backend)


if __name__ == "__main__":
    main()
