"""Element-wise operations called in a Functional graph let channels pass through."""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from keras import ops

from keras_dropneuron import slim_model

RNG = np.random.default_rng(0)


def _assert_exact_and_reloads(model, slim, x, tmp_path):
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)
    slim.save(tmp_path / "slim.keras")
    loaded = keras.saving.load_model(tmp_path / "slim.keras")
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(slim(x)), atol=1e-6)


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
        lambda x: 2.0 * x - 1,
        lambda x: ops.maximum(x / 4.0, 0.1) ** 2,
        lambda x: 1.0 - ops.sigmoid(x),
    ],
    ids=[
        "gelu",
        "relu-of-tanh",
        "exp-of-negative",
        "clip-of-square",
        "times-a-number",
        "maximum-divide-power",
        "number-minus",
    ],
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


@pytest.mark.parametrize(
    "between",
    [
        lambda x: ops.cumsum(x, axis=-1),
        lambda x: ops.sort(x, axis=-1),
        lambda x: ops.clip(x, np.linspace(-1.0, 0.0, 16).astype("float32"), 1.0),
        lambda x: x + ops.ones((16,)),
        lambda x: x * np.arange(16, dtype="float32"),
    ],
    ids=["cumsum", "sort", "clip-to-an-array", "plus-an-array", "times-an-array"],
)
def test_operations_off_the_list_or_with_an_array_keep_channels(between):
    model = _model(between)
    x = RNG.standard_normal((6, 8)).astype("float32")
    slim = slim_model(model)
    assert slim.get_layer("first").units == 16
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


def _gated_model(combine):
    """`down(combine(gate(x), up(x)))`, the gated feed-forward of recent LMs."""
    inputs = keras.Input((5, 8))
    gate = keras.layers.Dense(16, name="gate")
    up = keras.layers.Dense(16, name="up")
    down = keras.layers.Dense(3, name="down")
    model = keras.Model(inputs, down(combine(gate(inputs), up(inputs))))
    _zero_rows(down, [0, 1, 2, 3, 4])
    for layer, value in ((gate, 1.0), (up, 0.5)):  # unit 7 is constant in both
        kernel, bias = to_numpy(layer.kernel).copy(), to_numpy(layer.bias).copy()
        kernel[:, 7], bias[7] = 0, value
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    return model


@pytest.mark.parametrize(
    "combine",
    [
        lambda g, u: ops.silu(g) * u,
        lambda g, u: ops.add(g, u),
        lambda g, u: ops.maximum(g, u) - u,
    ],
    ids=["silu-times", "add", "maximum-minus"],
)
def test_operation_on_two_tensors_shares_their_channels(combine, tmp_path):
    model = _gated_model(combine)
    slim = slim_model(model)
    # 5 unread units and the constant unit 7 (folded into down's bias) go from both.
    assert slim.get_layer("gate").units == 10
    assert slim.get_layer("up").units == 10
    x = RNG.standard_normal((4, 5, 8)).astype("float32")
    _assert_exact_and_reloads(model, slim, x, tmp_path)


def test_constant_through_two_tensors_is_the_operation_on_both():
    model = _gated_model(lambda g, u: ops.silu(g) * u)
    slim = slim_model(model)
    # Unit 7 is silu(1.0) * 0.5 always: down's bias takes it times row 7.
    silu = 1.0 / (1.0 + np.exp(-1.0))
    expected = (
        to_numpy(model.get_layer("down").bias)
        + 0.5 * silu * to_numpy(model.get_layer("down").kernel)[7]
    )
    np.testing.assert_allclose(to_numpy(slim.get_layer("down").bias), expected, rtol=1e-5)


def test_broadcasting_the_channel_axis_keeps_channels():
    inputs = keras.Input((5, 8))
    wide = keras.layers.Dense(16, name="wide")(inputs)
    scale = keras.layers.Dense(1, name="scale")(inputs)
    down = keras.layers.Dense(3, name="down")
    model = keras.Model(inputs, down(wide * scale))
    _zero_rows(down, [0, 1])
    slim = slim_model(model)
    assert slim.get_layer("wide").units == 16
    x = RNG.standard_normal((4, 5, 8)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


def _zero_rows(layer, rows):
    kernel = to_numpy(layer.kernel).copy()
    kernel[..., rows, :] = 0
    layer.kernel.assign(kernel)


def test_reshape_keeping_the_channel_axis_passes_channels():
    inputs = keras.Input((4, 4, 3))
    conv = keras.layers.Conv2D(8, 1, name="conv")
    flat = keras.layers.Reshape((16, 8))(conv(inputs))
    last = keras.layers.Dense(2)
    model = keras.Model(inputs, last(keras.layers.GlobalAveragePooling1D()(flat)))
    _zero_rows(last, [0, 2, 5])
    slim = slim_model(model)
    assert slim.get_layer("conv").filters == 5
    x = RNG.standard_normal((3, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


def test_squeeze_excite_reshape_passes_channels():
    inputs = keras.Input((4, 4, 3))
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    squeeze = keras.layers.GlobalAveragePooling2D()(features)
    reduce = keras.layers.Dense(4, activation="relu")
    excite = keras.layers.Dense(8, activation="sigmoid", name="excite")(reduce(squeeze))
    scaled = keras.layers.Multiply()([features, keras.layers.Reshape((1, 1, 8))(excite)])
    last = keras.layers.Dense(2)
    model = keras.Model(inputs, last(keras.layers.GlobalAveragePooling2D()(scaled)))
    _zero_rows(last, [1, 6])
    _zero_rows(reduce, [1, 6])  # the squeeze does not read channels 1 and 6 either
    slim = slim_model(model)
    assert slim.get_layer("conv").filters == 6
    assert slim.get_layer("excite").units == 6
    x = RNG.standard_normal((3, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


def test_reshape_that_changes_the_channel_axis_keeps_it():
    inputs = keras.Input((4, 4, 8))
    conv = keras.layers.Conv2D(8, 1, name="conv")
    last = keras.layers.Dense(2)
    model = keras.Model(inputs, last(keras.layers.Reshape((4, 32))(conv(inputs))))
    _zero_rows(last, [0, 1])
    assert slim_model(model).get_layer("conv").filters == 8


def _split_model(axis=-1):
    inputs = keras.Input((4, 8))
    hidden = keras.layers.Dense(12, name="hidden")(inputs)
    first, second = ops.split(hidden, 2, axis=axis)
    heads = [keras.layers.Dense(2, name=n)(t) for n, t in (("p", first), ("q", second))]
    model = keras.Model(inputs, keras.layers.Concatenate()(heads))
    _zero_rows(model.get_layer("p"), [0, 2])
    _zero_rows(model.get_layer("q"), [5])
    return model


def test_split_on_channels_splits_at_the_kept_widths(tmp_path):
    model = _split_model()
    slim = slim_model(model)
    # 2 of the first half and 1 of the second go: an even split becomes 4 + 5.
    assert slim.get_layer("hidden").units == 9
    assert slim.get_layer("p").kernel.shape[0] == 4
    assert slim.get_layer("q").kernel.shape[0] == 5
    x = RNG.standard_normal((3, 4, 8)).astype("float32")
    _assert_exact_and_reloads(model, slim, x, tmp_path)


def test_split_on_another_axis_keeps_channels():
    model = _split_model(axis=1)
    assert slim_model(model).get_layer("hidden").units == 12
