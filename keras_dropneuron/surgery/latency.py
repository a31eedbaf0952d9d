"""Measured latency of the source and the slim model, side by side."""

import statistics
import time

import keras

from keras_dropneuron.surgery import batches
from keras_dropneuron.surgery.plan import Plan

_REPEATS = 7


def measure(
    plan: Plan, source: keras.Model, slim: keras.Model, batch_size: int, repeats: int = _REPEATS
) -> dict[str, float]:
    """Median `predict_on_batch` time of both models, alternated, on random data.

    Both run their compiled predict function (traced once, before timing) on
    the same batch, one after the other, `repeats` times; alternating makes
    both see the same machine load.

    Returns:
        A dict: `batch_size`, `before_ms`, `after_ms` and `speedup`
        (`before_ms / after_ms`).
    """
    data = batches.random_inputs(source, batch_size=batch_size)
    inputs = batches.packed(source, data)
    slim_inputs = batches.packed(slim, batches.slice_inputs(plan, data))
    source.predict_on_batch(inputs)
    slim.predict_on_batch(slim_inputs)
    before, after = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        source.predict_on_batch(inputs)
        before.append(time.perf_counter() - start)
        start = time.perf_counter()
        slim.predict_on_batch(slim_inputs)
        after.append(time.perf_counter() - start)
    before_ms = 1000 * statistics.median(before)
    after_ms = 1000 * statistics.median(after)
    return {
        "batch_size": batch_size,
        "before_ms": before_ms,
        "after_ms": after_ms,
        "speedup": before_ms / after_ms,
    }
