"""A unit that BatchNormalization reads: its kernel column, gamma and beta form one group.

The joint penalty is checked against numpy and its gradient against the
closed form of one SGD step; pruning zeroes the whole group at once and the
masks hold it at zero; the reports count the unit alive while any part of it
is not zero; the slim model removes it exactly.
"""

import keras
import numpy as np
import pytest
from backend_utils import sync, to_numpy

from keras_dropneuron import (
    PruneCallback,
    prune_weights,
    regularize_model,
    slim_model,
    sparsity_report,
)
from keras_dropneuron.normalized_units import find_normalized_units
from keras_dropneuron.regularizers import DropNeuronRegularizer, NormalizedUnitRegularizer

L = keras.layers


def _cnn(between=(), scale=True, center=True, seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(6, 3, padding="same", name="conv")(x)
    for layer in between:
        h = layer(h)
    h = L.BatchNormalization(scale=scale, center=center, name="bn")(h)
    h = L.ReLU()(h)
    h = L.Conv2D(4, 3, padding="same", name="conv_2")(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(x, L.Dense(3, name="out")(h))


def _settle(model, seed=1):
    """Moving statistics and affine weights as training would leave them (not zero, not one)."""
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    for variable in bn.weights:
        shape = tuple(variable.shape)
        if "variance" in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, shape))
        else:
            variable.assign(rng.normal(0.0, 0.5, shape))


def _data(n=6):
    return np.random.default_rng(0).standard_normal((n, 8, 8, 3)).astype("float32")


def _joint_norms(model):
    kernel = to_numpy(model.get_layer("conv").kernel)
    bn = model.get_layer("bn")
    squares = np.sum(kernel.astype(np.float64) ** 2, axis=(0, 1, 2))
    for variable in (bn.gamma, bn.beta):
        if variable is not None:
            squares = squares + to_numpy(variable).astype(np.float64) ** 2
    return np.sqrt(squares)


@pytest.mark.parametrize("scale_by_group_size", [False, True])
def test_joint_penalty_matches_numpy(scale_by_group_size):
    model = _cnn()
    _settle(model)
    regularized = regularize_model(
        model, li=1e-2, lo=3e-3, l1=1e-4, scale_by_group_size=scale_by_group_size
    )
    variable = regularized.get_layer("conv").kernel
    assert isinstance(variable.regularizer, NormalizedUnitRegularizer)
    kernel = to_numpy(variable).astype(np.float64)
    factor = np.sqrt(3 * 3 * 3 + 2) if scale_by_group_size else 1.0
    rows = np.sqrt(np.sum(kernel**2, axis=(0, 1, 3)))
    row_factor = np.sqrt(3 * 3 * 6) if scale_by_group_size else 1.0
    expected = (
        1e-2 * factor * np.sum(_joint_norms(regularized))
        + 3e-3 * row_factor * np.sum(rows)
        + 1e-4 * np.sum(np.abs(kernel))
    )
    penalty = float(to_numpy(variable.regularizer(variable)))
    np.testing.assert_allclose(penalty, expected, rtol=1e-5)
    # The next conv is read by no normalization: its own DropNeuronRegularizer.
    assert isinstance(regularized.get_layer("conv_2").kernel.regularizer, DropNeuronRegularizer)
    # The user's model is not touched.
    assert model.get_layer("conv").kernel.regularizer is None


def test_one_sgd_step_moves_the_whole_group():
    # With the head frozen at zero the data loss has no gradient: the step is the penalty's.
    model = _cnn()
    _settle(model)
    regularized = regularize_model(model, li=0.5)
    head = regularized.get_layer("out")
    head.kernel.assign(np.zeros(head.kernel.shape))
    head.trainable = False
    bn = regularized.get_layer("bn")
    conv = regularized.get_layer("conv")
    before = [to_numpy(v).astype(np.float64) for v in (conv.kernel, bn.gamma, bn.beta)]
    norms = _joint_norms(regularized)
    lr = 0.1
    regularized.compile(keras.optimizers.SGD(lr), "mse")
    regularized.fit(_data(), np.zeros((6, 3)), batch_size=6, epochs=1, verbose=0)
    after = [to_numpy(v) for v in (conv.kernel, bn.gamma, bn.beta)]
    for old, new in zip(before, after, strict=True):
        np.testing.assert_allclose(new, old - lr * 0.5 * old / norms, rtol=1e-4, atol=1e-6)


def test_pairs_are_found_through_stateless_layers_only():
    assert set(_names(_cnn())) == {"conv"}
    assert set(_names(_cnn(between=[L.ReLU(), L.Dropout(0.1)]))) == {"conv"}
    assert _names(_cnn(between=[L.PReLU()])) == []  # a weight in between
    assert _names(_cnn(scale=False)) == []  # without gamma the channel need not be 0
    # Read by a second layer too (a residual branch): not paired.
    x = keras.Input((8, 8, 3))
    h = L.Conv2D(3, 1, name="conv")(x)
    y = L.Add()([L.BatchNormalization()(h), h])
    assert _names(keras.Model(x, y)) == []
    # A model output: read outside.
    x = keras.Input((4,))
    h = L.Dense(5, name="fc")(x)
    assert _names(keras.Model(x, [h, L.BatchNormalization()(h)])) == []


def _names(model):
    return [units.layer.name for units in find_normalized_units(model).values()]


@pytest.mark.parametrize("mode", ["incoming", "neuron"])
def test_pruning_zeroes_the_joint_group(mode):
    model = _cnn()
    _settle(model)
    bn, conv = model.get_layer("bn"), model.get_layer("conv")
    kernel = to_numpy(conv.kernel)
    kernel[..., 2] *= 1e-3  # a small column with a large gamma: alive as a group
    kernel[..., 4] *= 1e-3
    conv.kernel.assign(kernel)
    gamma, beta = to_numpy(bn.gamma), to_numpy(bn.beta)
    gamma[[2, 4]], beta[4] = [1.5, 1e-3], 1e-3
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    threshold = 0.05
    dead = _joint_norms(model) < threshold
    assert list(np.flatnonzero(dead)) == [4]
    counts = prune_weights(model, threshold, mode=mode)
    pruned = to_numpy(conv.kernel)
    assert np.all(pruned[..., 4] == 0) and np.all(pruned[..., 2] != 0)
    assert to_numpy(bn.gamma)[4] == 0 and to_numpy(bn.beta)[4] == 0
    np.testing.assert_array_equal(np.delete(to_numpy(bn.gamma), 4), np.delete(gamma, 4))
    # The counts are the layers' own weights: gamma and beta are not among them.
    total = sum(int(np.prod(v.shape)) for v in model.weights if v.path.endswith("kernel"))
    assert counts["total"] == total
    row = {r["layer"]: r for r in sparsity_report(model).to_list()}["conv"]
    assert (row["units_alive_incoming"], row["units_after_slim"]) == (5, 5)
    data = _data()
    slim = slim_model(model)
    assert slim.get_layer("conv").filters == 5
    np.testing.assert_allclose(to_numpy(slim(data)), to_numpy(model(data)), atol=1e-5)


def test_weight_mode_leaves_gamma_and_beta():
    model = _cnn()
    _settle(model)
    bn = model.get_layer("bn")
    gamma = to_numpy(bn.gamma)
    gamma[0] = 1e-4
    bn.gamma.assign(gamma)
    prune_weights(model, 1e-2)
    np.testing.assert_array_equal(to_numpy(bn.gamma), gamma)


def test_a_column_dead_alone_is_alive_with_its_beta():
    # The report agrees with the surgeon: beta keeps the channel a non-zero constant.
    model = _cnn()
    _settle(model)
    conv = model.get_layer("conv")
    kernel, bias = to_numpy(conv.kernel), to_numpy(conv.bias)
    kernel[..., 1] = 0
    conv.kernel.assign(kernel)
    row = {r["layer"]: r for r in sparsity_report(model).to_list()}["conv"]
    assert row["units_alive_incoming"] == 6 and row["units_after_slim"] == 6
    assert bias[1] == 0


def test_masks_hold_the_group_at_zero_through_training():
    model = regularize_model(_cnn(), li=1e-3)
    _settle(model)
    conv, bn = model.get_layer("conv"), model.get_layer("bn")
    kernel = to_numpy(conv.kernel)
    kernel[..., 3] = 1e-4
    conv.kernel.assign(kernel)
    gamma, beta = to_numpy(bn.gamma), to_numpy(bn.beta)
    gamma[3] = beta[3] = 1e-4
    bn.gamma.assign(gamma)
    bn.beta.assign(beta)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    rng = np.random.default_rng(0)
    model.fit(
        _data(12),
        rng.standard_normal((12, 3)),
        batch_size=4,
        epochs=3,
        verbose=0,
        callbacks=[PruneCallback(threshold=0.1, mode="incoming")],
    )
    sync(model)
    assert to_numpy(bn.gamma)[3] == 0 and to_numpy(bn.beta)[3] == 0
    assert np.all(to_numpy(conv.kernel)[..., 3] == 0)
    assert np.all(to_numpy(bn.gamma)[[0, 1, 2, 4, 5]] != 0)
    slim = slim_model(model)
    assert slim.get_layer("conv").filters == 5


@pytest.mark.parametrize("center", [True, False])
def test_slim_removes_a_dead_group_exactly(center):
    model = _cnn(center=center)
    _settle(model)
    conv, bn = model.get_layer("conv"), model.get_layer("bn")
    kernel = to_numpy(conv.kernel)
    kernel[..., [0, 5]] = 0
    conv.kernel.assign(kernel)
    gamma = to_numpy(bn.gamma)
    gamma[[0, 5]] = 0
    bn.gamma.assign(gamma)
    if center:
        beta = to_numpy(bn.beta)
        beta[[0, 5]] = 0
        bn.beta.assign(beta)
    row = {r["layer"]: r for r in sparsity_report(model).to_list()}["conv"]
    assert row["units_alive_incoming"] == 4
    data = _data()
    slim = slim_model(model)
    assert slim.get_layer("conv").filters == 4
    np.testing.assert_allclose(to_numpy(slim(data)), to_numpy(model(data)), atol=1e-5)


def test_saved_model_keeps_the_plain_regularizer(tmp_path):
    regularized = regularize_model(_cnn(), li=1e-3, lo=1e-3)
    regularized.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    regularizer = loaded.get_layer("conv").kernel_regularizer
    assert isinstance(regularizer, DropNeuronRegularizer) and regularizer.li == 1e-3
    with pytest.raises(NotImplementedError, match="no config"):
        regularized.get_layer("conv").kernel.regularizer.get_config()


def test_bn_scale_is_l1_on_gamma():
    model = _cnn()
    _settle(model)
    regularized = regularize_model(model, bn_scale=1e-3)
    gamma = regularized.get_layer("bn").gamma
    expected = 1e-3 * np.sum(np.abs(to_numpy(gamma).astype(np.float64)))
    np.testing.assert_allclose(float(to_numpy(gamma.regularizer(gamma))), expected, rtol=1e-6)
    config = regularized.get_layer("bn").get_config()["gamma_regularizer"]
    assert config["config"]["l1"] == 1e-3
    with pytest.raises(ValueError, match="bn_scale"):
        regularize_model(model, bn_scale=-1.0)


def test_scale_mode_prunes_units_by_gamma_alone():
    model = _cnn()
    _settle(model)
    bn, conv = model.get_layer("bn"), model.get_layer("conv")
    gamma = to_numpy(bn.gamma)
    gamma[[1, 2]] = [1e-3, -1e-3]
    bn.gamma.assign(gamma)
    kernel_before = to_numpy(model.get_layer("conv_2").kernel)
    prune_weights(model, 0.01, mode="scale")
    assert list(np.flatnonzero(to_numpy(bn.gamma) == 0)) == [1, 2]
    assert list(np.flatnonzero(to_numpy(bn.beta) == 0)) == [1, 2]
    assert list(np.flatnonzero(np.all(to_numpy(conv.kernel) == 0, axis=(0, 1, 2)))) == [1, 2]
    # Layers no normalization reads are not pruned in this mode.
    np.testing.assert_array_equal(to_numpy(model.get_layer("conv_2").kernel), kernel_before)
    data = _data()
    slim = slim_model(model)
    assert slim.get_layer("conv").filters == 4
    np.testing.assert_allclose(to_numpy(slim(data)), to_numpy(model(data)), atol=1e-5)
