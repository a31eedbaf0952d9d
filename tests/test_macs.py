"""Multiply-adds as `slim_model`'s report and the budgets count them, checked by hand.

Each expected figure is written out term by term from the layer's shapes;
`hand_macs` repeats the textbook formulas without the layer rules.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from hand_macs import model_macs

from keras_dropneuron import slim_model
from keras_dropneuron.surgery.size import slim_size_ratios

L = keras.layers


def _macs_of(model, name):
    """`macs_before` of layer `name` in the report of slimming `model`."""
    _, report = slim_model(model, return_report=True)
    return {row["name"]: row["macs_before"] for row in report.rows}[name]


def test_self_attention():
    x = keras.Input((6, 8))
    model = keras.Model(x, L.MultiHeadAttention(2, 4, name="mha")(x, x))
    projections = 3 * (6 * 8 * 2 * 4)  # query, key and value: 6 positions, 8 -> 2 heads x 4
    scores_and_sums = 2 * 6 * 6 * (4 + 4)  # per head, 6 x 6 position pairs
    output = 6 * 2 * 4 * 8
    assert _macs_of(model, "mha") == projections + scores_and_sums + output
    assert model_macs(model) == projections + scores_and_sums + output


def test_cross_attention_counts_the_key_and_value_sequence():
    query, context = keras.Input((6, 8)), keras.Input((10, 12))
    model = keras.Model([query, context], L.MultiHeadAttention(2, 4, name="mha")(query, context))
    projections = 6 * 8 * 2 * 4 + 10 * 12 * 2 * 4 + 10 * 12 * 2 * 4  # query, key, value
    scores_and_sums = 2 * 6 * 10 * (4 + 4)  # 6 queries against 10 keys, per head
    output = 6 * 2 * 4 * 8
    assert _macs_of(model, "mha") == projections + scores_and_sums + output == 3648


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="Keras's MultiHeadAttention itself fails on JAX when value_dim != key_dim",
)
def test_cross_attention_with_its_own_key_and_keywords():
    query, value, key = keras.Input((6, 8)), keras.Input((10, 12)), keras.Input((10, 5))
    mha = L.MultiHeadAttention(2, 4, value_dim=3, name="mha")
    model = keras.Model([query, value, key], mha(query=query, key=key, value=value))
    projections = 6 * 8 * 2 * 4 + 10 * 5 * 2 * 4 + 10 * 12 * 2 * 3  # query, key, value
    scores_and_sums = 2 * 6 * 10 * (4 + 3)
    output = 6 * 2 * 3 * 8
    assert _macs_of(model, "mha") == projections + scores_and_sums + output


def test_attention_over_one_axis_of_a_grid():
    x = keras.Input((3, 4, 8))  # attention along the 4 columns, separately in each of 3 rows
    model = keras.Model(x, L.MultiHeadAttention(2, 4, attention_axes=(2,), name="mha")(x, x))
    projections = 3 * (12 * 8 * 2 * 4)
    scores_and_sums = 2 * 12 * 4 * (4 + 4)  # each of 12 positions against the 4 in its row
    output = 12 * 2 * 4 * 8
    assert _macs_of(model, "mha") == projections + scores_and_sums + output


@pytest.mark.parametrize(
    "layer, gates",
    [(L.LSTM(5, name="rnn"), 4), (L.GRU(5, name="rnn"), 3), (L.SimpleRNN(5, name="rnn"), 1)],
)
def test_recurrent_layers(layer, gates):
    x = keras.Input((7, 3))
    model = keras.Model(x, layer(x))
    # Per step each gate's 5 units read the 3 inputs and the 5 previous outputs.
    assert _macs_of(model, "rnn") == 7 * (3 + 5) * gates * 5 == model_macs(model)


def test_bidirectional_counts_both_directions():
    x = keras.Input((7, 3))
    model = keras.Model(x, L.Bidirectional(L.LSTM(5), name="bi")(x))
    assert _macs_of(model, "bi") == 2 * 7 * (3 + 5) * 4 * 5 == model_macs(model)


def test_grouped_convolution():
    x = keras.Input((6, 6, 4))
    model = keras.Model(x, L.Conv2D(8, 3, groups=2, padding="same", name="conv")(x))
    # 36 positions, 9 taps, each filter reads the 2 channels of its group.
    assert _macs_of(model, "conv") == 36 * 9 * 2 * 8 == model_macs(model)


def test_depthwise_separable_and_transposed_convolutions():
    x = keras.Input((8, 8, 4))
    depthwise = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)  # 6x6x8
    separable = L.SeparableConv2D(5, 3, name="sep")(depthwise)  # 4x4x5
    transposed = L.Conv2DTranspose(3, 2, strides=2, name="up")(separable)  # 8x8x3
    model = keras.Model(x, transposed)
    assert _macs_of(model, "dw") == 36 * 9 * 8
    assert _macs_of(model, "sep") == 16 * 8 * 9 + 16 * 8 * 5  # depthwise, then pointwise
    assert _macs_of(model, "up") == 16 * 4 * 5 * 3  # each input position spreads over 4 taps
    assert model_macs(model) == 36 * 9 * 8 + 16 * 8 * 14 + 16 * 4 * 5 * 3


def _cross_attention_block():
    """A decoder-style block: cross-attention to a context, then a feed-forward net."""
    keras.utils.set_random_seed(0)
    query, context = keras.Input((4, 16)), keras.Input((32, 16))
    attended = L.MultiHeadAttention(4, 8, name="mha")(query, context)
    hidden = L.Dense(8, activation="relu", name="ff1")(L.Add()([query, attended]))
    return keras.Model([query, context], L.Dense(16, name="ff2")(hidden))


def test_budget_ratio_of_a_cross_attention_model_matches_the_hand_count():
    model = _cross_attention_block()
    kernel, bias = model.get_layer("ff1").get_weights()
    kernel[:, :4], bias[:4] = 0.0, 0.0  # half the feed-forward units die
    model.get_layer("ff1").set_weights([kernel, bias])

    slim = slim_model(model)
    assert slim.get_layer("ff1").units == 4
    expected = model_macs(slim) / model_macs(model)
    assert slim_size_ratios(model)["macs"] == pytest.approx(expected, rel=1e-12)
    # The attention dominates: removing half of a small feed-forward net saves little.
    assert expected > 0.95
    data = [np.ones((2, 4, 16), "float32"), np.ones((2, 32, 16), "float32")]
    np.testing.assert_allclose(to_numpy(slim(data)), to_numpy(model(data)), atol=1e-5)
