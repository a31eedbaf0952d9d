"""EinsumDense: a Dense-like equation loses its dead units exactly; others stay whole."""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

from keras_dropneuron import regularize_model, slim_model
from keras_dropneuron.layer_rules import rule_for
from keras_dropneuron.layer_rules.einsum_dense import EinsumDenseRule, dense_like
from keras_dropneuron.surgery.report import SlimReport

RNG = np.random.default_rng(0)
L = keras.layers


@pytest.mark.parametrize(
    ("equation", "bias_axes", "expected"),
    [
        ("ab,bc->ac", "c", True),
        ("abc,cd->abd", None, True),
        ("...b,bc->...c", "c", True),
        ("abc,cde->abde", None, False),  # two output axes (heads)
        ("abc,cd->abd", "b", False),  # bias along another axis
        ("abc,dc->abd", None, False),  # kernel transposed
        ("abc,cd->bad", None, False),  # axes reordered
    ],
)
def test_dense_like_equations(equation, bias_axes, expected):
    assert dense_like(equation, bias_axes) is expected


def _model(shape, equation, output_shape, out_shape, bias_axes):
    inputs = keras.Input(shape)
    first = L.EinsumDense(equation, output_shape, bias_axes=bias_axes, activation="relu")
    second = L.EinsumDense(equation, out_shape, bias_axes=bias_axes)
    model = keras.Model(inputs, second(first(inputs)))
    for weight in model.weights:
        weight.assign(RNG.standard_normal(weight.shape).astype("float32"))
    return model, first, second


@pytest.mark.parametrize(
    ("shape", "equation", "hidden", "out", "bias_axes"),
    [
        ((8,), "ab,bc->ac", 16, 3, "c"),
        ((8,), "ab,bc->ac", 16, 3, None),
        ((5, 8), "abc,cd->abd", (None, 16), (None, 3), "d"),
    ],
)
def test_dead_units_are_removed_exactly(shape, equation, hidden, out, bias_axes, tmp_path):
    model, first, second = _model(shape, equation, hidden, out, bias_axes)
    kernel = to_numpy(second.kernel).copy()
    kernel[[1, 4, 7, 9]] = 0  # units 1, 4, 7 and 9 are read by nothing
    second.kernel.assign(kernel)
    x = RNG.standard_normal((6, *shape)).astype("float32")
    slim = slim_model(model)
    new_first = slim.layers[1]
    assert new_first.kernel.shape == (8, 12)
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)
    slim.save(tmp_path / "slim.keras")
    loaded = keras.saving.load_model(tmp_path / "slim.keras")
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(slim(x)), atol=1e-6)


def test_constant_unit_is_folded_into_the_next_bias():
    model, first, second = _model((8,), "ab,bc->ac", 16, 3, "c")
    kernel, bias = to_numpy(first.kernel).copy(), to_numpy(first.bias).copy()
    kernel[:, [2, 5]] = 0
    bias[[2, 5]] = [0.7, -0.3]  # relu: units 2 and 5 are 0.7 and 0 always
    first.kernel.assign(kernel)
    first.bias.assign(bias)
    x = RNG.standard_normal((6, 8)).astype("float32")
    slim = slim_model(model)
    assert slim.layers[1].kernel.shape == (8, 14)
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


def test_head_equation_is_kept_whole():
    inputs = keras.Input((5, 8))
    heads = L.EinsumDense("abc,cde->abde", (None, 2, 4), name="heads")(inputs)
    model = keras.Model(inputs, L.Dense(3)(L.Reshape((5, 8))(heads)))
    kernel = to_numpy(model.get_layer("heads").kernel).copy()
    kernel[..., 0, :] = 0
    model.get_layer("heads").kernel.assign(kernel)
    slim, report = slim_model(model, return_report=True)
    assert slim.get_layer("heads").kernel.shape == (8, 2, 4)
    assert isinstance(rule_for(model.get_layer("heads")), EinsumDenseRule)
    assert report.rows[0]["params_after"] == report.rows[0]["params_before"]
    assert "not a Dense on the last axis" in report.kept_whole["heads"]


def test_ellipsis_equation_on_a_sequence_loses_units():
    inputs = keras.Input((5, 8))
    first = L.EinsumDense("...b,bc->...c", 16, bias_axes="c", activation="gelu", name="first")
    last = L.EinsumDense("...b,bc->...c", 3, name="last")
    model = keras.Model(inputs, last(first(inputs)))
    for weight in model.weights:
        weight.assign(RNG.standard_normal(weight.shape).astype("float32"))
    kernel = to_numpy(last.kernel).copy()
    kernel[[0, 3]] = 0
    last.kernel.assign(kernel)
    x = RNG.standard_normal((4, 5, 8)).astype("float32")
    slim = slim_model(model)
    assert slim.get_layer("first").kernel.shape == (8, 14)
    assert slim.get_layer("last").kernel.shape == (14, 3)
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


def test_activation_mixing_channels_keeps_the_units():
    inputs = keras.Input((8,))
    first = L.EinsumDense("ab,bc->ac", 16, activation="softmax", name="first")
    last = L.EinsumDense("ab,bc->ac", 3, name="last")
    model = keras.Model(inputs, last(first(inputs)))
    kernel = to_numpy(last.kernel).copy()
    kernel[[0, 3]] = 0
    last.kernel.assign(kernel)
    slim, report = slim_model(model, return_report=True)
    assert slim.get_layer("first").kernel.shape == (8, 16)
    assert report.kept_whole["first"] == "activation mixes channels"


def test_penalty_and_multiply_adds_match_numpy():
    model, first, _ = _model((5, 8), "abc,cd->abd", (5, 16), (5, 3), "d")
    regularized = regularize_model(model, li=1e-2, lo=2e-2)
    layer = regularized.layers[1]
    kernel = to_numpy(layer.kernel)
    expected = (
        1e-2 * np.linalg.norm(kernel, axis=0).sum() + 2e-2 * np.linalg.norm(kernel, axis=1).sum()
    )
    np.testing.assert_allclose(
        float(sum(to_numpy(v) for v in regularized.losses[:1])), expected, rtol=1e-5
    )
    rows = SlimReport.compare(model, model).rows
    assert [row["macs_before"] for row in rows] == [5 * 8 * 16, 5 * 16 * 3]
