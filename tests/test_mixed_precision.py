"""Mixed and low precision: penalties computed in float32 from the float32 master
weights, masks that hold under loss scaling, and half-precision variables.

`test_callbacks.test_mixed_precision` covers a plain fit under both mixed policies and
`test_regularizers` a float16 tensor; this file goes further."""

import keras
import numpy as np
import pytest
from backend_utils import sync, to_numpy

from keras_dropneuron import (
    DropNeuronRegularizer,
    LiRegularizer,
    PruneCallback,
    prune_weights,
    sparsity_report,
)

L = keras.layers
POLICIES = ["mixed_float16", "mixed_bfloat16"]


def _penalty(w, li=0.1, lo=0.2):
    w = np.asarray(w, dtype=np.float64)
    return li * np.linalg.norm(w, axis=0).sum() + lo * np.linalg.norm(w, axis=1).sum()


def _model(**layer_kwargs):
    reg = DropNeuronRegularizer(li=0.1, lo=0.2)
    return keras.Sequential(
        [
            keras.Input((40,)),
            L.Dense(300, activation="relu", kernel_regularizer=reg, name="h1", **layer_kwargs),
            L.Dense(1, name="out", **layer_kwargs),
        ]
    )


@pytest.mark.parametrize("policy", POLICIES)
def test_penalty_is_float32_from_the_master_weights(policy):
    keras.config.set_dtype_policy(policy)
    model = _model()
    layer = model.get_layer("h1")
    assert layer.compute_dtype != "float32" and layer.kernel.dtype == "float32"
    (loss,) = model.losses
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    w = np.asarray(layer.kernel.numpy())
    expected = _penalty(w)
    np.testing.assert_allclose(float(to_numpy(loss)), expected, rtol=1e-6)
    # It is far closer to that than a penalty computed from the half-precision copy.
    half = to_numpy(keras.ops.cast(keras.ops.cast(w, layer.compute_dtype), "float32"))
    half = half.astype(np.float64)
    assert abs(float(to_numpy(loss)) - expected) < abs(_penalty(half) - expected) / 10


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_tensor_is_regularized_in_float32(dtype):
    w = np.random.randn(200, 100).astype("float32")
    x = keras.ops.cast(w, dtype)
    value = LiRegularizer(1.0)(x)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    exact = np.asarray(keras.ops.cast(x, "float32"), dtype=np.float64)
    np.testing.assert_allclose(
        float(to_numpy(value)), np.linalg.norm(exact, axis=0).sum(), rtol=1e-6
    )


class ZeroWatcher(keras.callbacks.Callback):
    def __init__(self, variable, positions):
        super().__init__()
        self.variable, self.positions, self.violations, self.batches = variable, positions, 0, 0

    def on_train_batch_end(self, batch, logs=None):
        sync(self.model)
        self.batches += 1
        self.violations += int(np.count_nonzero(self.variable.numpy()[self.positions]))


@pytest.mark.parametrize("policy", POLICIES)
def test_masks_hold_under_mixed_precision_and_loss_scaling(policy):
    keras.config.set_dtype_policy(policy)
    model = _model()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x = np.random.randn(128, 40).astype("float32")
    y = x[:, :1] - x[:, 1:2]
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[PruneCallback(0.05)])
    kernel = model.get_layer("h1").kernel
    pruned = np.asarray(kernel.numpy()) == 0
    assert pruned.any() and not pruned.all()
    watcher = ZeroWatcher(kernel, pruned)
    history = model.fit(
        x, y, epochs=2, batch_size=32, verbose=0, callbacks=[PruneCallback(0.05), watcher]
    )
    assert watcher.batches == 8 and watcher.violations == 0
    assert np.all(np.isfinite(history.history["loss"]))
    # The callback keeps the policy: float32 variables, half-precision compute.
    assert kernel.dtype == "float32"
    assert [layer.dtype_policy.name for layer in model.layers] == [policy, policy]
    assert model.predict(x[:2], verbose=0).dtype == np.dtype(policy.split("_")[1])
    # The logged sparsity is that of the float32 weights of the managed layer h1.
    assert history.history["sparsity"][-1] == np.mean(kernel.numpy() == 0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_variables_are_pruned_masked_and_reported(dtype):
    model = _model(dtype=dtype)
    kernel = model.get_layer("h1").kernel
    assert kernel.dtype == dtype
    w = np.asarray(kernel.numpy()).astype(np.float32)
    counts = prune_weights(model, 0.05, layers=["h1"])
    expected = np.where(np.abs(w) < 0.05, 0, w)
    np.testing.assert_array_equal(np.asarray(kernel.numpy()).astype(np.float32), expected)
    assert counts["zeros"] == int(np.sum(expected == 0))
    row = sparsity_report(model).to_list()[0]
    assert row["nonzero_weights"] == int(np.count_nonzero(expected))

    model.compile(keras.optimizers.SGD(1e-3), "mse")
    x = np.random.randn(64, 40).astype("float32")
    watcher = ZeroWatcher(kernel, expected == 0)
    model.fit(
        x, x[:, :1], epochs=1, batch_size=16, verbose=0, callbacks=[PruneCallback(0.0), watcher]
    )
    assert watcher.batches == 4 and watcher.violations == 0
    assert kernel.dtype == dtype
