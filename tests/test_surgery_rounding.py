"""slim_model(round_to=N): widths stay multiples of N by keeping dead channels."""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

from keras_dropneuron import slim_model


def _mlp(dead):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(20, activation="relu", name="h")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
    kernel = model.get_layer("out").kernel.numpy()
    kernel[:dead] = 0
    model.get_layer("out").kernel.assign(kernel)
    return model


@pytest.mark.parametrize(
    ("dead", "round_to", "units"),
    [(7, 1, 13), (7, 8, 16), (7, 4, 16), (5, 8, 16), (3, 8, 20), (19, 8, 8)],
)
def test_widths_round_up_to_a_multiple(dead, round_to, units):
    model = _mlp(dead)
    slim, report = slim_model(model, round_to=round_to, return_report=True)
    assert slim.get_layer("h").units == units  # ceil((20 - dead) / N) * N, at most 20
    assert report.max_deviation <= report.tolerance
    x = np.random.default_rng(0).standard_normal((4, 6)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


def test_coupled_channels_round_together():
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(12, 1, name="a")(inputs)
    b = keras.layers.Conv2D(12, 1, name="b")(inputs)
    merged = keras.layers.Add()([a, b])
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="out")(merged))
    kernel = model.get_layer("out").kernel.numpy()
    kernel[..., :5, :] = 0  # 5 of the 12 shared channels are never read
    model.get_layer("out").kernel.assign(kernel)
    slim = slim_model(model, round_to=4)
    assert slim.get_layer("a").filters == slim.get_layer("b").filters == 8


@pytest.mark.parametrize(
    ("round_to", "error"), [(0, ValueError), (2.0, TypeError), (True, TypeError)]
)
def test_bad_round_to(round_to, error):
    with pytest.raises(error, match="Invalid (value|type) for argument `round_to`"):
        slim_model(_mlp(3), round_to=round_to)


def test_benchmark_measures_both_models():
    model = _mlp(7)
    slim, report = slim_model(model, benchmark=16)
    latency = report.latency
    assert latency["batch_size"] == 16
    assert latency["before_ms"] > 0 and latency["after_ms"] > 0
    assert latency["speedup"] == pytest.approx(latency["before_ms"] / latency["after_ms"])
    assert "Latency at batch 16 (this machine)" in str(report)
    assert slim.get_layer("h").units == 13


# Not named `benchmark`: pytest-benchmark owns that fixture name.
@pytest.mark.parametrize(("batch", "error"), [(0, ValueError), (8.0, TypeError)])
def test_bad_benchmark(batch, error):
    with pytest.raises(error, match="argument `benchmark`"):
        slim_model(_mlp(3), benchmark=batch)
