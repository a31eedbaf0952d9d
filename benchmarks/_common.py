"""Shared pieces of the benchmark scripts: arguments, alternating timing, tables, JSON.

The scripts import this as `_common` (they run as `python benchmarks/<script>.py`, which puts
this folder first on `sys.path`).
"""

import argparse
import json
import os
import platform
import time

import numpy as np

MIN_SAMPLE_SECONDS = 0.05  # shorter samples are dominated by timer and scheduler noise
_LOAD_AT_START = list(os.getloadavg())  # the machine is shared: record how busy it was


def parser(doc, repeats):
    """An argument parser with the flags every script shares."""
    p = argparse.ArgumentParser(
        description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tiny", action="store_true", help="smallest configuration, for CI")
    p.add_argument("--repeats", type=int, default=repeats, help="samples per side (median)")
    p.add_argument("--out", help="write the results as JSON to this file")
    return p


def alternate(fns, repeats, min_seconds=MIN_SAMPLE_SECONDS):
    """Median seconds per call of each callable, timed alternately.

    Every callable is called once to warm up (tracing, allocation), then the number of
    calls per sample is chosen so that a sample lasts at least `min_seconds`. Each
    repetition then takes one sample of every callable, rotating the order so that no side
    always runs first (after a cache-cold or slower predecessor).

    Args:
        fns: Mapping name -> callable that blocks until its result is ready.
        repeats: Samples per callable.

    Returns:
        Mapping name -> median seconds per call.
    """
    names = list(fns)
    calls = {}
    for name in names:
        fns[name]()
        start = time.perf_counter()
        fns[name]()
        once = time.perf_counter() - start
        calls[name] = max(1, int(np.ceil(min_seconds / max(once, 1e-9))))
    samples = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, n = fns[name], calls[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return {name: float(np.median(s)) for name, s in samples.items()}


def timed(callback_class):
    """`callback_class` with the wall time spent in its epoch and batch hooks in `seconds`."""

    class Timed(callback_class):
        seconds = 0.0

        def _timed(self, hook, *args):
            start = time.perf_counter()
            hook(*args)
            self.seconds += time.perf_counter() - start

        def on_train_begin(self, logs=None):
            self._timed(super().on_train_begin, logs)

        def on_epoch_begin(self, epoch, logs=None):
            self._timed(super().on_epoch_begin, epoch, logs)

        def on_train_batch_end(self, batch, logs=None):
            self._timed(super().on_train_batch_end, batch, logs)

        def on_epoch_end(self, epoch, logs=None):
            self._timed(super().on_epoch_end, epoch, logs)

    Timed.__name__ = f"Timed{callback_class.__name__}"
    return Timed


def gpus():
    """The GPUs that the loaded Keras backend sees (names as that backend gives them)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def environment():
    """Machine and library versions, recorded next to every figure.

    TensorFlow is optional on the JAX and PyTorch backends (`tensorflow` is then None).
    """
    import keras

    try:
        import tensorflow as tf
    except ImportError:
        tf = None
    return {
        "tensorflow": tf.__version__ if tf is not None else None,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "gpus": gpus(),
        "loadavg_at_start": _LOAD_AT_START,
        "loadavg_at_end": list(os.getloadavg()),
    }


def print_table(rows, columns):
    """Prints dict rows as an aligned table; floats get 3 significant decimals."""

    def cell(value):
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    cells = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    print(flush=True)


def finish(args, rows, **extra):
    """Writes `{"environment", "args", "rows", ...}` to `args.out` when given."""
    if not args.out:
        return
    payload = {"environment": environment(), "args": vars(args), "rows": rows, **extra}
    with open(args.out, "w") as file:
        json.dump(payload, file, indent=1)
    print(f"wrote {args.out}")
