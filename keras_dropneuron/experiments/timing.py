"""Side-by-side inference timing of two models."""

import time

import keras
import numpy as np


def _forward(model):
    import tensorflow as tf  # timing compiled graphs is TensorFlow's business here

    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def inference_speedup(
    original: keras.Model,
    slim: keras.Model,
    x: np.ndarray,
    x_slim: np.ndarray | None = None,
    repeats: int = 15,
    calls_per_repeat: int = 5,
) -> dict[str, float]:
    """Median time of `original` over median time of `slim` on batch `x`.

    Both models are compiled with `tf.function`, warmed up, then timed
    alternately in the same process so that both see the same machine state.

    Args:
        original: The pruned, full-size model.
        slim: Its slim model.
        x: The batch `original` reads.
        x_slim: The slim model's batch when it reads fewer features (for
            example after `slim_model(..., drop_inputs=True)`). Defaults to
            `None`: `x`.
        repeats: Timed samples per model. Defaults to `15`.
        calls_per_repeat: Calls per sample. Defaults to `5`.

    Returns:
        A dict with `original_ms`, `slim_ms` (median per call) and
        `speedup = original_ms / slim_ms`.
    """
    inputs = [x, x if x_slim is None else x_slim]
    forwards = [_forward(original), _forward(slim)]
    for forward, batch in zip(forwards, inputs, strict=True):
        forward(batch)  # trace and warm up
    times = [[], []]
    for _ in range(repeats):
        for which, forward in enumerate(forwards):
            start = time.perf_counter()
            for _ in range(calls_per_repeat):
                out = forward(inputs[which])
            np.asarray(out)  # wait for the result
            times[which].append((time.perf_counter() - start) / calls_per_repeat)
    original_ms, slim_ms = (1000 * float(np.median(t)) for t in times)
    return {"original_ms": original_ms, "slim_ms": slim_ms, "speedup": original_ms / slim_ms}
