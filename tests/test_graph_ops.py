"""Element-wise operations called in a Functional graph let channels pass through."""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from keras import ops

from keras_dropneuron import slim_model

RNG = np.random.default_rng(0)


def _model(between):
    inputs = keras.Input((8,))
    first = keras.layers.Dense(16, name="first")
    last = keras.layers.Dense(3, name="last")
    model = keras.Model(inputs, last(between(first(inputs))))
    # Units 0-4 are read by nothing; unit 7 is the constant op(0.5).
    kernel = to_numpy(last.kernel).copy()
    kernel[:5] = 0
    last.kernel.assign(kernel)
    kernel, bias = to_numpy(first.kernel).copy(), to_numpy(first.bias).copy()
    kernel[:, 7], bias[7] = 0, 0.5
    first.kernel.assign(kernel)
    first.bias.assign(bias)
    return model


@pytest.mark.parametrize(
    "between",
    [
        lambda x: ops.gelu(x),
        lambda x: keras.activations.relu(ops.tanh(x)),
        lambda x: ops.exp(ops.negative(x)),
        lambda x: ops.clip(ops.square(x), 0.0, 2.0),
    ],
    ids=["gelu", "relu-of-tanh", "exp-of-negative", "clip-of-square"],
)
def test_dead_and_constant_units_pass_through_operations(between):
    model = _model(between)
    x = RNG.standard_normal((6, 8)).astype("float32")
    slim = slim_model(model)
    assert slim.get_layer("first").units == 10  # 5 unread and 1 constant (folded) gone
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


def test_operation_that_mixes_channels_keeps_them():
    model = _model(lambda x: ops.softmax(x, axis=-1))
    x = RNG.standard_normal((6, 8)).astype("float32")
    slim = slim_model(model)
    assert slim.get_layer("first").units == 16
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)
