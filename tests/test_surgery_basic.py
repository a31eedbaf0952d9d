"""slim_model on plain stacks: MLP, LeNet-5 with Flatten, CNN + BN, 1D/3D."""

import keras
import numpy as np
import pytest

from keras_dropneuron.surgery import SlimReport, slim_model


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def mlp():
    inputs = keras.Input((6,), name="features")
    x = keras.layers.Dense(8, activation="relu", name="h1")(inputs)
    x = keras.layers.Dense(5, activation="tanh", name="h2")(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs, name="mlp")


def test_mlp_outgoing_and_constant_units(assert_equivalent, kill):
    model = mlp()
    kill.outgoing(model.get_layer("h2"), [0, 3])  # h1 units 0, 3 unread
    kill.incoming(model.get_layer("h2"), [4], bias=0.7)  # h2 unit 4 = tanh(0.7)
    before = weights_of(model)
    slim, report = slim_model(model, return_report=True)
    assert_equivalent(model, slim)
    # h1: 6 in, 6 out; h2: 6 in, 4 out; out: 4 in, 3 out (plus biases).
    assert slim.count_params() == (6 * 6 + 6) + (6 * 4 + 4) + (4 * 3 + 3)
    assert [layer.name for layer in slim.layers] == ["features", "h1", "h2", "out"]
    assert slim.get_layer("h2").activation is model.get_layer("h2").activation
    assert slim.name == "mlp"
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert isinstance(report, SlimReport)
    rows = {row["name"]: row for row in report.to_list()}
    assert rows["h1"]["units_before"] == 8 and rows["h1"]["units_after"] == 6
    assert rows["h2"]["params_after"] == 6 * 4 + 4
    assert rows["out"]["macs_before"] == 5 * 3 and rows["out"]["macs_after"] == 4 * 3
    text = str(report)
    assert "h2 (Dense)" in text and "Total" in text


def test_nothing_dead_is_identity(assert_equivalent):
    model = mlp()
    slim = slim_model(model)
    assert slim.count_params() == model.count_params()
    assert_equivalent(model, slim)


def test_constant_zero_without_bias_is_removed(assert_equivalent):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, use_bias=False, activation="relu", name="a")(inputs)
    outputs = keras.layers.Dense(2, use_bias=False, name="b")(x)
    model = keras.Model(inputs, outputs)
    kernel = model.get_layer("a").kernel.numpy()
    kernel[:, [1, 2]] = 0
    model.get_layer("a").kernel.assign(kernel)
    slim = slim_model(model)
    assert_equivalent(model, slim)
    assert slim.count_params() == 4 * 4 + 4 * 2
    assert not slim.get_layer("b").use_bias


def test_sequential_and_flags_preserved(assert_equivalent, kill):
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(7, activation="relu", name="d1"),
            keras.layers.Dense(3, name="d2", kernel_regularizer="l2", dtype="mixed_float16"),
        ]
    )
    model.get_layer("d1").trainable = False
    kill.outgoing(model.get_layer("d2"), [0, 6])
    slim = slim_model(model)
    assert not slim.get_layer("d1").trainable
    assert slim.get_layer("d2").dtype_policy.name == "mixed_float16"
    assert slim.get_layer("d2").kernel_regularizer is not None
    assert slim.get_layer("d1").units == 5
    x = np.random.default_rng(1).standard_normal((4, 5)).astype("float32")
    to_numpy = keras.ops.convert_to_numpy  # torch outputs require grad
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-2)  # float16 output
    plain = slim_model(model, keep_regularizers=False)
    assert plain.get_layer("d2").kernel_regularizer is None


def lenet():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(6, 5, activation="relu", name="c1")(inputs)
    x = keras.layers.MaxPooling2D(name="p1")(x)
    x = keras.layers.Conv2D(16, 5, activation="relu", name="c2")(x)
    x = keras.layers.MaxPooling2D(name="p2")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(120, activation="relu", name="f1")(x)
    x = keras.layers.Dense(84, activation="relu", name="f2")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="f3")(x))


def test_lenet_flatten(assert_equivalent, kill):
    model = lenet()
    kill.incoming(model.get_layer("c1"), [1], bias=-1.0)  # relu(-1) = 0
    kill.incoming(model.get_layer("c2"), [2], bias=0.3)  # constant 0.3 -> f1 bias
    kernel = model.get_layer("f1").kernel.numpy()
    kernel[np.arange(4 * 4) * 16 + 5] = 0  # every flattened position of filter 5
    kernel[7] = 0  # only one position of filter 7: must stay
    model.get_layer("f1").kernel.assign(kernel)
    slim = slim_model(model)
    assert_equivalent(model, slim)
    assert slim.get_layer("flat").output.shape[-1] == 4 * 4 * 14
    expected = (
        (5 * 5 * 1 * 5 + 5)
        + (5 * 5 * 5 * 14 + 14)
        + (4 * 4 * 14 * 120 + 120)
        + (120 * 84 + 84)
        + (84 * 10 + 10)
    )
    assert slim.count_params() == expected


def test_cnn_batchnorm_constant_fold(assert_equivalent, kill):
    rng = np.random.default_rng(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    x = keras.layers.Conv2D(8, 3, name="c2")(x)  # valid: constants fold exactly
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.Activation("relu", name="r2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(x))
    for name in ("bn1", "bn2"):
        bn = model.get_layer(name)
        bn.set_weights(
            [
                rng.uniform(0.5, 2, 8),
                rng.normal(size=8),
                rng.normal(size=8),
                rng.uniform(0.5, 2, 8),
            ]
        )
    bn1 = model.get_layer("bn1")
    bn1.moving_mean.assign(np.where(np.arange(8) == 2, -1.0, bn1.moving_mean))
    bn1.beta.assign(np.where(np.arange(8) == 2, 0.5, bn1.beta))
    # Channel 2 is the constant relu(BN(0.5)) > 0, folded into c2's bias.
    kill.incoming(model.get_layer("c1"), [2], bias=0.5)
    kill.outgoing(model.get_layer("head"), [3])
    slim = slim_model(model)
    assert_equivalent(model, slim)
    expected = (3 * 3 * 3 * 7 + 7) + 4 * 7 + (3 * 3 * 7 * 7 + 7) + 4 * 7 + (7 * 4 + 4)
    assert slim.count_params() == expected


@pytest.mark.parametrize("rank", [1, 3])
def test_conv1d_conv3d(rank, assert_equivalent, kill):
    conv = {1: keras.layers.Conv1D, 3: keras.layers.Conv3D}[rank]
    pool = {1: keras.layers.GlobalMaxPooling1D, 3: keras.layers.GlobalMaxPooling3D}
    inputs = keras.Input((8,) * rank + (2,))
    x = conv(6, 3, activation="relu", name="c1")(inputs)
    x = conv(5, 3, name="c2")(x)
    x = pool[rank](name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    kill.outgoing(model.get_layer("c2"), [0, 4])
    kill.incoming(model.get_layer("c2"), [1], bias=2.0)
    kill.outgoing(model.get_layer("head"), [3])
    slim = slim_model(model)
    assert_equivalent(model, slim)
    taps = 3**rank
    expected = (taps * 2 * 4 + 4) + (taps * 4 * 3 + 3) + (3 * 2 + 2)
    assert slim.count_params() == expected


def test_drop_inputs_reports_kept_indices(assert_equivalent, kill):
    model = mlp()
    kill.outgoing(model.get_layer("h1"), [0, 5])
    slim, report = slim_model(model, drop_inputs=True, return_report=True)
    np.testing.assert_array_equal(report.kept_inputs["features"], [1, 2, 3, 4])
    assert slim.input_shape == (None, 4)
    x = np.random.default_rng(2).standard_normal((3, 6)).astype("float32")
    assert_equivalent(model, slim, inputs=x, slim_inputs=x[:, [1, 2, 3, 4]])
    assert slim_model(model).input_shape == (None, 6)


def test_nested_models_are_inlined(assert_equivalent, kill):
    block = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(9, activation="relu", name="inner")],
        name="block",
    )
    inputs = keras.Input((6,))
    x = block(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    kill.outgoing(model.get_layer("head"), [0, 1, 2])
    slim = slim_model(model)
    assert_equivalent(model, slim)
    assert slim.get_layer("inner").units == 6
    assert slim.count_params() == (6 * 6 + 6) + (6 * 2 + 2)
