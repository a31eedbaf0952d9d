"""Channel coupling: residual Add, Concatenate, depthwise, separable, padding."""

import math

import keras
import numpy as np
import pytest

from keras_dropneuron.surgery import slim_model


def test_residual_add_shares_one_channel_set(assert_equivalent, kill):
    inputs = keras.Input((8, 8, 4))
    x0 = keras.layers.Conv2D(6, 1, name="stem")(inputs)
    x0 = keras.layers.BatchNormalization(name="bn")(x0)
    x0 = keras.layers.ReLU(name="relu0")(x0)
    a = keras.layers.Conv2D(5, 3, padding="same", activation="relu", name="a")(x0)
    b = keras.layers.Conv2D(6, 1, name="b")(a)
    x = keras.layers.Add(name="add")([x0, b])
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    model.get_layer("bn").moving_mean.assign(np.linspace(-1, 1, 6))
    # Channel 2 is unread everywhere; channel 4 is unread only by the head.
    kill.outgoing(model.get_layer("head"), [2, 4])
    kill.outgoing(model.get_layer("a"), [2])
    kill.incoming(model.get_layer("a"), [1], bias=0.4)  # folds into 1x1 conv b
    slim = slim_model(model)
    assert_equivalent(model, slim)
    assert slim.get_layer("stem").filters == 5
    assert slim.get_layer("b").filters == 5
    expected = (4 * 5 + 5) + 4 * 5 + (9 * 5 * 4 + 4) + (4 * 5 + 5) + (5 * 3 + 3)
    assert slim.count_params() == expected


def test_concatenate_offsets(assert_equivalent, kill):
    inputs = keras.Input((10,))
    a = keras.layers.Dense(4, activation="relu", name="a")(inputs)
    b = keras.layers.Dense(3, activation="relu", name="b")(inputs)
    x = keras.layers.Concatenate(name="cat")([a, b])
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    kill.outgoing(model.get_layer("head"), [1, 4])  # a:1 and b:0 (offset 4)
    kill.incoming(model.get_layer("b"), [2], bias=0.5)  # relu(0.5) folded in head
    slim = slim_model(model)
    assert_equivalent(model, slim)
    assert (slim.get_layer("a").units, slim.get_layer("b").units) == (3, 1)
    assert slim.count_params() == (10 * 3 + 3) + (10 * 1 + 1) + (4 * 2 + 2)


def test_depthwise_multiplier_block(assert_equivalent, kill):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1, name="pw")(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    # Whole block of channel 1 (outputs 2, 3) unread; half of block 2 unread.
    kill.outgoing(model.get_layer("head"), [2, 3, 4])
    slim = slim_model(model)
    assert_equivalent(model, slim)
    assert slim.count_params() == (3 * 3 + 3) + (9 * 3 * 2 + 6) + (6 * 2 + 2)


def test_separable(assert_equivalent, kill):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1, name="pw")(inputs)
    x = keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    kill.outgoing(model.get_layer("sep"), [0], attribute="depthwise_kernel")
    kill.incoming(model.get_layer("pw"), [3], bias=0.6)  # valid: exact fold
    kill.outgoing(model.get_layer("head"), [2])
    slim = slim_model(model)
    assert_equivalent(model, slim)
    separable = 9 * 2 * 2 + (2 * 2) * 4 + 4
    assert slim.count_params() == (3 * 2 + 2) + separable + (4 * 2 + 2)


def same_padding_model(bias, kill):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(2, 3, padding="same", name="c2")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    kill.incoming(model.get_layer("c1"), [1], bias=bias)
    return model


def test_same_padding_constant_kept_by_default(assert_equivalent, kill):
    model = same_padding_model(bias=0.5, kill=kill)
    slim, report = slim_model(model, return_report=True)
    assert slim.count_params() == model.count_params()
    assert report.max_deviation == 0.0  # nothing removed: the same computation
    assert_equivalent(model, slim)


def test_same_padding_zero_constant_removed(assert_equivalent, kill):
    model = same_padding_model(bias=-0.5, kill=kill)  # relu(-0.5) == 0 is exact
    slim = slim_model(model)
    assert_equivalent(model, slim)
    assert slim.count_params() == (9 * 3 * 3 + 3) + (9 * 3 * 2 + 2)


def test_approximate_folds_same_padding_and_measures(kill):
    model = same_padding_model(bias=0.5, kill=kill)
    slim, report = slim_model(model, approximate=True, return_report=True)
    assert slim.count_params() == (9 * 3 * 3 + 3) + (9 * 3 * 2 + 2)
    assert math.isfinite(report.max_deviation) and report.max_deviation > 0
    assert "deviation" in str(report)


class Scale(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


BARRIERS = {
    "reshape": lambda x: keras.layers.Reshape((6, 4))(x),  # the channel axis changes
    "permute": lambda x: keras.layers.Permute((2, 1))(x),
    "layer_norm": lambda x: keras.layers.LayerNormalization()(x),
    "attention": lambda x: keras.layers.MultiHeadAttention(1, 3)(x, x),
    "lambda": lambda x: keras.layers.Lambda(lambda t: t * 2.0)(x),
    "custom": lambda x: Scale()(x),
    "softmax": lambda x: keras.layers.Activation("softmax")(x),
    "op": lambda x: keras.ops.flip(x, axis=-1),
}


@pytest.mark.parametrize("barrier", sorted(BARRIERS))
def test_barriers_keep_channels(barrier, assert_equivalent, kill):
    inputs = keras.Input((4, 6))
    pre = keras.layers.Dense(6, activation="relu", name="pre")(inputs)
    x = BARRIERS[barrier](pre)
    model = keras.Model(inputs, keras.layers.Dense(2, name="post")(x))
    kill.incoming(model.get_layer("pre"), [0, 1], bias=0.0)  # constant 0
    slim = slim_model(model)
    assert slim.get_layer("pre").units == 6
    assert slim.count_params() == model.count_params()
    assert_equivalent(model, slim)


def test_model_output_is_a_barrier(assert_equivalent, kill):
    inputs = keras.Input((5,))
    pre = keras.layers.Dense(6, activation="relu", name="pre")(inputs)
    post = keras.layers.Dense(2, name="post")(pre)
    model = keras.Model(inputs, [post, pre])
    kill.outgoing(model.get_layer("post"), [0, 1])
    slim = slim_model(model)
    assert slim.get_layer("pre").units == 6
    x = np.random.default_rng(0).standard_normal((3, 5)).astype("float32")
    for old, new in zip(model(x), slim(x), strict=True):
        np.testing.assert_allclose(new, old, atol=1e-5)
    # Without the extra output the two unread units go.
    single = keras.Model(inputs, post)
    assert slim_model(single).get_layer("pre").units == 4


@pytest.mark.parametrize(
    "conv",
    [
        lambda: keras.layers.Conv2D(4, 1, groups=2, name="c2"),
        lambda: keras.layers.Conv2D(4, 1, data_format="channels_first", name="c2"),
    ],
)
def test_grouped_and_channels_first_convs_keep_channels(conv, kill):
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 1, activation="relu", name="c1")(inputs)
    model = keras.Model(inputs, conv()(x))
    kill.incoming(model.get_layer("c1"), [0, 2])
    assert slim_model(model).count_params() == model.count_params()


def test_softmax_consumer_still_loses_dead_inputs(assert_equivalent, kill):
    # A classifier head reads the dead units: its softmax mixes its *outputs*
    # only, so the hidden units it ignores must still go.
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(6, activation="relu", name="hidden")(inputs)
    head = keras.layers.Dense(3, activation="softmax", name="head")(hidden)
    model = keras.Model(inputs, head)
    kill.outgoing(model.get_layer("head"), [1, 4])
    slim = slim_model(model)
    assert slim.get_layer("hidden").units == 4
    assert slim.count_params() == model.count_params() - 2 * (5 + 1) - 2 * 3
    assert_equivalent(model, slim)


def test_softmax_producer_keeps_its_outputs(assert_equivalent, kill):
    inputs = keras.Input((5,))
    mixed = keras.layers.Dense(6, activation="softmax", name="mixed")(inputs)
    post = keras.layers.Dense(2, name="post")(mixed)
    model = keras.Model(inputs, post)
    kill.outgoing(model.get_layer("post"), [0, 1])
    # Zero rows in `post` do not make softmax outputs removable: every output
    # of `mixed` depends on all its pre-activations.
    kill.incoming(model.get_layer("mixed"), [2], bias=0.0)
    slim = slim_model(model)
    assert slim.get_layer("mixed").units == 6
    assert slim.count_params() == model.count_params()
    assert_equivalent(model, slim)
