"""prune_to_budget keeps its promise: within the budget, or a BudgetError that says why."""

import keras
import numpy as np
import pytest

from keras_dropneuron import BudgetError, prune_to_budget

L = keras.layers


def _data(n=512, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32")
    return x, y


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((20,)),
            L.Dense(32, activation="relu"),
            L.Dense(16, activation="relu"),
            L.Dense(2, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def _prune(model, **kwargs):
    x, y = _data()
    args = dict(target_macs=0.5, li=1e-3, lo=1e-3, epochs=10, batch_size=64)
    args.update(max_accuracy_drop=1.0, finetune_epochs=1)
    args.update(kwargs)
    return prune_to_budget(model, (x[:384], y[:384]), (x[384:], y[384:]), **args)


def test_a_callback_that_sets_the_unpruned_weights_back_is_caught():
    # The best "macs_ratio" in mode "max" is the first epoch's: before the pruning.
    stopping = keras.callbacks.EarlyStopping(
        monitor="macs_ratio", mode="max", patience=100, restore_best_weights=True
    )
    with pytest.raises(BudgetError, match="target_macs=0.5 was missed") as info:
        _prune(_mlp(), callbacks=[stopping])
    assert info.value.ratios["macs"] > 0.5
    assert info.value.report.ratios["macs"] == info.value.ratios["macs"]
    assert info.value.model is not None


def test_the_budget_is_met_with_harmless_callbacks():
    callbacks = [keras.callbacks.TerminateOnNaN()]
    slim, report = _prune(_mlp(), callbacks=callbacks)
    assert report.ratios["macs"] <= 0.5
