"""The registry of layer rules: each rule against a numpy formula or a count by hand."""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from conftest import REPO

from keras_dropneuron import layer_rules, slim_model
from keras_dropneuron.layer_rules import BARRIER, rule_for
from keras_dropneuron.layer_rules.conv import ConvRule, ConvTransposeRule
from keras_dropneuron.layer_rules.dense import DenseRule
from keras_dropneuron.layer_rules.depthwise import DepthwiseRule, SeparableRule
from keras_dropneuron.layer_rules.layout import WeightLayout, group_slice
from keras_dropneuron.layer_rules.merge import ConcatenateRule, MergeRule
from keras_dropneuron.layer_rules.per_channel import BatchNormalizationRule
from keras_dropneuron.surgery.graph import build_graph
from keras_dropneuron.surgery.plan import make_plan

RNG = np.random.default_rng(0)


def built(layer, shape):
    """`layer` called once on a symbolic input of `shape` (batch excluded)."""
    inputs = keras.Input(shape)
    outputs = layer(inputs)
    return layer, inputs, outputs


def randomize(layer):
    for weight in layer.weights:
        weight.assign(RNG.standard_normal(weight.shape).astype("float32"))
    return layer


def plan_of(model, threshold=0.0):
    return make_plan(build_graph(model), threshold=threshold, drop_inputs=False, approximate=False)


# ---------------------------------------------------------------- registry


class MyDense(keras.layers.Dense):
    pass


def test_every_registered_type_has_one_rule():
    types = [cls for rule in layer_rules.RULES for cls in rule.types]
    assert len(types) == len(set(types))


def test_lookup_follows_the_class_hierarchy():
    assert isinstance(rule_for(MyDense(2)), DenseRule)
    assert isinstance(rule_for(keras.layers.Conv2DTranspose(2, 3)), ConvTransposeRule)
    assert rule_for(keras.layers.LayerNormalization()) is BARRIER
    assert rule_for(keras.layers.Permute((2, 1))).barrier_reason(None, [], []) == (
        "layer type without a rule"
    )


def test_registry_gives_weights_and_names():
    assert layer_rules.weight_layouts(keras.layers.Dense(2)) == DenseRule.weights
    assert set(layer_rules.supported_layer_names()) == {
        cls.__name__
        for rule in layer_rules.RULES
        for cls in rule.types
        if rule.weights_of(cls) or rule.wraps
    }
    assert "Bidirectional" in layer_rules.supported_layer_names()
    lstm, gru = keras.layers.LSTM(2), keras.layers.GRU(2)
    assert [layout.gates for layout in layer_rules.weight_layouts(lstm)] == [4, 4]
    assert [layout.gates for layout in layer_rules.weight_layouts(gru)] == [3, 3]


def test_readme_table_is_the_generated_one():
    text = (REPO / "README.md").read_text()
    start, end = "<!-- supported-layers:start -->", "<!-- supported-layers:end -->"
    between = text.split(start, 1)[1].split(end, 1)[0]
    assert between.strip() == layer_rules.supported_layers_table()


def test_table_has_a_row_per_rule_and_compacts_dimensions():
    lines = layer_rules.supported_layers_table().splitlines()
    assert len(lines) == 2 + len(layer_rules.RULES) + 1  # header, rules, what no rule covers
    assert (
        "| `Conv1D/2D/3DTranspose` | `kernel[..., j, :]` | `kernel[..., i]` "
        "| units removed (`filters` lowered) |"
    ) in lines
    assert lines[-1].endswith("| - | - | kept whole |")


@pytest.mark.parametrize(
    ("input_axes", "output_axes", "side", "expected"),
    [
        ((-2,), (-1,), "output", "`w[..., j]`"),
        ((-2,), (-1,), "input", "`w[..., i, :]`"),
        ((-2,), (-2, -1), "output", "`w[..., c, m]`"),
        ((0,), (1,), "output", "`w[:, j]`"),
        ((-1,), (0,), "output", "`w[j]`"),
    ],
)
def test_group_slice_names_the_unit_axes(input_axes, output_axes, side, expected):
    layout = WeightLayout("w", "w_regularizer", input_axes, output_axes)
    assert group_slice(layout, side) == expected


# ---------------------------------------------------------------- Dense


def test_dense_slice_fold_and_macs():
    layer, inputs, outputs = built(randomize(keras.layers.Dense(5)), (7, 4))
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    kept_in, kept_out = np.array([0, 2, 3]), np.array([1, 4])
    constants = np.array([0.0, 0.5, 0.0, 0.0])
    sliced = DenseRule().slice(layer, kept_in, kept_out, constants)
    np.testing.assert_array_equal(sliced["kernel"], kernel[np.ix_(kept_in, kept_out)])
    np.testing.assert_allclose(sliced["bias"], (bias + 0.5 * kernel[1])[kept_out], rtol=1e-6)
    # 7 positions x 4 inputs x 5 units, counted by hand.
    assert DenseRule().macs(layer, inputs, outputs) == 7 * 4 * 5


def test_dense_outgoing_zero_and_threshold():
    layer, _, _ = built(randomize(keras.layers.Dense(3)), (4,))
    kernel = layer.kernel.numpy()
    kernel[1] = 0
    kernel[2] = 1e-3
    layer.kernel.assign(kernel)
    np.testing.assert_array_equal(DenseRule().outgoing_zero(layer, 0.0), [0, 1, 0, 0])
    np.testing.assert_array_equal(DenseRule().outgoing_zero(layer, 1e-2), [0, 1, 1, 0])


# ---------------------------------------------------------------- convolutions


@pytest.mark.parametrize(
    ("padding", "kernel_size", "exact"),
    [("valid", 3, True), ("same", 3, False), ("same", 1, True)],
)
def test_conv_fold_is_exact_only_without_a_border(padding, kernel_size, exact):
    layer, _, _ = built(keras.layers.Conv2D(2, kernel_size, padding=padding), (6, 6, 3))
    assert ConvRule().fold_is_exact(layer) is exact


def test_conv_slice_fold_and_macs():
    layer, inputs, outputs = built(randomize(keras.layers.Conv2D(4, 3)), (6, 6, 3))
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    constants = np.array([0.0, 2.0, 0.0])
    sliced = ConvRule().slice(layer, np.array([0, 2]), np.array([1, 3]), constants)
    np.testing.assert_array_equal(sliced["kernel"], kernel[:, :, [0, 2]][..., [1, 3]])
    expected = bias + 2.0 * kernel[:, :, 1, :].sum(axis=(0, 1))
    np.testing.assert_allclose(sliced["bias"], expected[[1, 3]], rtol=1e-5)
    # 4x4 output positions x 3x3 taps x 3 in x 4 out.
    assert ConvRule().macs(layer, inputs, outputs) == 16 * 9 * 3 * 4


def test_conv_transpose_slices_its_own_axes():
    layer, inputs, outputs = built(randomize(keras.layers.Conv2DTranspose(4, 3)), (5, 5, 3))
    kernel = layer.kernel.numpy()  # (3, 3, out=4, in=3)
    sliced = ConvTransposeRule().slice(layer, np.array([1, 2]), np.array([0, 3]), None)
    np.testing.assert_array_equal(sliced["kernel"], kernel[:, :, [0, 3], :][..., [1, 2]])
    np.testing.assert_array_equal(sliced["bias"], layer.bias.numpy()[[0, 3]])
    # Every input position scatters 3x3 taps x 3 in x 4 out.
    assert ConvTransposeRule().macs(layer, inputs, outputs) == 25 * 9 * 3 * 4
    assert ConvTransposeRule().fold_is_exact(layer) is False


def test_channels_first_layers_are_kept_whole_with_a_reason():
    inputs = keras.Input((6, 6, 4))
    first = keras.layers.Conv2D(4, 1, data_format="channels_first")
    reason = ConvRule().barrier_reason(first, [inputs], [first(inputs)])
    assert reason.startswith("channels_first")
    bn = keras.layers.BatchNormalization(axis=1)
    reason = BatchNormalizationRule().barrier_reason(bn, [inputs], [bn(inputs)])
    assert reason == "normalizes axis 1, not the channels on the last axis"


def _grouped_model(dead_filters):
    inputs = keras.Input((6, 6, 4))
    grouped = keras.layers.Conv2D(8, 3, groups=2, activation="relu", name="grouped")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1, name="out")(grouped))
    randomize(model.get_layer("grouped"))
    kernel = model.get_layer("out").kernel.numpy()
    kernel[..., dead_filters, :] = 0  # these filters are never read
    model.get_layer("out").kernel.assign(kernel)
    return model


def test_grouped_convolution_keeps_its_groups_equal():
    # Group 0 is filters 0-3, group 1 filters 4-7: three dead in group 0, one in group 1.
    model = _grouped_model([0, 1, 2, 5])
    slim = slim_model(model)
    grouped = slim.get_layer("grouped")
    assert grouped.filters == 6 and grouped.groups == 2  # 3 per group: one dead one kept
    x = RNG.standard_normal((2, 6, 6, 4)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)
    # With round_to=4 the 6 filters become 8: nothing is removed.
    assert slim_model(model, round_to=4).get_layer("grouped").filters == 8
    # Balanced groups remove freely: two dead in each.
    assert slim_model(_grouped_model([0, 1, 4, 5])).get_layer("grouped").filters == 4


def test_grouped_convolution_macs():
    layer, inputs, outputs = built(keras.layers.Conv2D(8, 3, groups=2), (6, 6, 4))
    # 4x4 output positions x 3x3 taps x (4 / 2) inputs per filter x 8 filters.
    assert ConvRule().macs(layer, inputs, outputs) == 16 * 9 * 2 * 8


def test_depthwise_and_separable_slices_and_macs():
    layer, inputs, outputs = built(
        randomize(keras.layers.DepthwiseConv2D(3, depth_multiplier=2)), (5, 5, 3)
    )
    sliced = DepthwiseRule().slice(layer, np.array([0, 2]), None, None)
    np.testing.assert_array_equal(sliced["kernel"], layer.kernel.numpy()[:, :, [0, 2]])
    np.testing.assert_array_equal(sliced["bias"], layer.bias.numpy()[[0, 1, 4, 5]])
    assert DepthwiseRule().macs(layer, inputs, outputs) == 9 * 9 * 6  # 3x3 out, 9 taps, 6 out

    layer, inputs, outputs = built(
        randomize(keras.layers.SeparableConv2D(4, 3, depth_multiplier=2)), (5, 5, 3)
    )
    sliced = SeparableRule().slice(layer, np.array([1]), np.array([0, 2]), None)
    np.testing.assert_array_equal(
        sliced["depthwise_kernel"], layer.depthwise_kernel.numpy()[:, :, [1]]
    )
    np.testing.assert_array_equal(
        sliced["pointwise_kernel"], layer.pointwise_kernel.numpy()[:, :, [2, 3]][..., [0, 2]]
    )
    # 3x3 outputs x (3 channels x 2) x (9 depthwise taps + 4 pointwise outputs).
    assert SeparableRule().macs(layer, inputs, outputs) == 9 * 6 * (9 + 4)


# ---------------------------------------------------------------- per channel and merges


def test_batch_normalization_constants_follow_its_formula():
    layer, _, _ = built(keras.layers.BatchNormalization(epsilon=1e-3), (3,))
    gamma, beta = np.array([1.0, 2.0, 0.5]), np.array([0.1, -0.2, 0.3])
    mean, variance = np.array([0.5, 0.0, -1.0]), np.array([4.0, 1.0, 0.25])
    layer.set_weights([gamma, beta, mean, variance])
    x = np.array([1.0, np.nan, 2.0])
    expected = gamma * (x - mean) / np.sqrt(variance + 1e-3) + beta
    np.testing.assert_allclose(BatchNormalizationRule().constants(layer, x), expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("layer", "formula"),
    [
        (keras.layers.Add(), lambda a, b: a + b),
        (keras.layers.Subtract(), lambda a, b: a - b),
        (keras.layers.Multiply(), lambda a, b: a * b),
        (keras.layers.Average(), lambda a, b: (a + b) / 2),
        (keras.layers.Maximum(), np.maximum),
        (keras.layers.Minimum(), np.minimum),
    ],
)
def test_merge_constants(layer, formula):
    a, b = np.array([1.0, -2.0, np.nan]), np.array([3.0, 0.5, 1.0])
    np.testing.assert_allclose(MergeRule().combine(layer, np.stack([a, b])), formula(a, b))


# ---------------------------------------------------------------- plans on small graphs


def test_plan_concatenate_keeps_offsets():
    inputs = keras.Input((3,))
    a = keras.layers.Dense(4, name="a")(inputs)
    b = keras.layers.Dense(2, name="b")(inputs)
    joined = keras.layers.Concatenate()([a, b])
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(joined))
    kernel = model.get_layer("out").kernel.numpy()
    kernel[[1, 5]] = 0  # a's unit 1 and b's unit 1 are never read
    model.get_layer("out").kernel.assign(kernel)
    plan = plan_of(model)
    calls = {call.name: call for call in plan.graph.calls}
    np.testing.assert_array_equal(plan.kept[calls["a"].outputs[0]], [0, 2, 3])
    np.testing.assert_array_equal(plan.kept[calls["b"].outputs[0]], [0])
    assert isinstance(rule_for(calls[joined._keras_history.operation.name].layer), ConcatenateRule)


def test_plan_flatten_maps_rows_to_channels():
    inputs = keras.Input((2, 3))
    hidden = keras.layers.Dense(3, name="h")(inputs)
    flat = keras.layers.Flatten()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1, name="out")(flat))
    kernel = model.get_layer("out").kernel.numpy()
    kernel[[1, 4]] = 0  # rows p * 3 + 1 for both positions: channel 1 of h
    model.get_layer("out").kernel.assign(kernel)
    plan = plan_of(model)
    h = next(call for call in plan.graph.calls if call.name == "h")
    np.testing.assert_array_equal(plan.kept[h.outputs[0]], [0, 2])
    kernel[4] = 1.0  # position 1 reads channel 1 again: it stays
    model.get_layer("out").kernel.assign(kernel)
    np.testing.assert_array_equal(plan_of(model).kept[h.outputs[0]], [0, 1, 2])


def test_plan_says_why_a_layer_is_kept_whole():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="d")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x, training=True)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    plan = plan_of(model)
    reasons = {
        call.name: reason for call, reason in zip(plan.graph.calls, plan.reasons, strict=True)
    }
    assert reasons["ln"] == "layer type without a rule"
    assert reasons["drop"] == "runs in training mode (batch statistics or random masks)"
    assert reasons["d"] is None and reasons["out"] is None
