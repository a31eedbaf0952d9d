"""Models built in Python: Lambda layers and unregistered losses and metrics.

`keras.models.clone_model` would re-create them from their configs, which
safe mode refuses (a Lambda's bytecode) or cannot resolve (an unregistered
function); the library's copies use the live objects instead.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

from keras_dropneuron import (
    BudgetError,
    DropNeuronRegularizer,
    choose_threshold,
    prune_to_budget,
    regularize_model,
)

L = keras.layers


def my_loss(y_true, y_pred):  # deliberately not registered
    return keras.ops.mean(keras.ops.square(y_true - y_pred))


def _dense_with_lambda(with_lambda=True):
    keras.utils.set_random_seed(0)
    x = keras.Input((8,))
    hidden = L.Dense(12, activation="relu", name="hidden")(x)
    if with_lambda:
        hidden = L.Lambda(lambda t: t * 2.0, name="double")(hidden)
    return keras.Model(x, L.Dense(2, name="out")(hidden))


def _conv_with_lambda():
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 1))
    h = L.Conv2D(6, 3, activation="relu", name="conv")(x)
    h = L.Lambda(lambda t: keras.ops.maximum(t, 0.1), name="floor")(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(x, L.Dense(2, activation="softmax", name="out")(h))


def _x(shape, n=16):
    return np.random.default_rng(0).normal(size=(n, *shape)).astype("float32")


def test_regularize_model_copies_lambda_layers():
    model = _dense_with_lambda()
    weights = [w.copy() for w in model.get_weights()]
    regularized = regularize_model(model, li=1e-3, lo=1e-3)

    assert isinstance(regularized.get_layer("hidden").kernel_regularizer, DropNeuronRegularizer)
    assert isinstance(regularized.get_layer("out").kernel_regularizer, DropNeuronRegularizer)
    assert regularized.get_layer("double") is not model.get_layer("double")
    x = _x((8,))
    np.testing.assert_allclose(to_numpy(regularized(x)), to_numpy(model(x)), atol=1e-6)
    # The user's model is untouched: same weights, its Lambda still called once.
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    assert len(model.get_layer("double")._inbound_nodes) == 1


def test_regularize_model_of_a_nested_model_with_a_lambda():
    inner = _dense_with_lambda()
    x = keras.Input((8,))
    model = keras.Model(x, L.Activation("softmax")(inner(x)))
    regularized = regularize_model(model, li=1e-3)
    np.testing.assert_allclose(
        to_numpy(regularized(_x((8,)))), to_numpy(model(_x((8,)))), atol=1e-6
    )


def test_prune_to_budget_with_a_lambda_layer():
    model = _conv_with_lambda()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    weights = [w.copy() for w in model.get_weights()]
    x = _x((8, 8, 1), n=256)
    y = (x[:, :4, :4, 0].mean(axis=(1, 2)) > 0).astype("int32")
    try:
        slim, report = prune_to_budget(
            model,
            (x[:192], y[:192]),
            (x[192:], y[192:]),
            target_macs=0.7,
            li=1e-2,
            lo=1e-2,
            epochs=6,
            finetune_epochs=1,
            batch_size=16,
            max_accuracy_drop=1.0,
        )
    except BudgetError:
        pass  # a missed budget is a valid answer; a safe-mode refusal is not
    else:
        assert report.ratios["macs"] <= 0.7
        assert slim.get_layer("floor").function is model.get_layer("floor").function
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def _compiled_with_custom_objects(model):
    model.compile("adam", loss=my_loss, metrics=[lambda y, p: keras.ops.mean(p)])
    return model


def test_regularize_model_compiles_the_copy_with_the_live_loss():
    model = _compiled_with_custom_objects(_dense_with_lambda(with_lambda=False))
    regularized = regularize_model(model, li=1e-3)
    assert regularized.compiled and regularized.loss is my_loss
    assert regularized.optimizer is not model.optimizer
    history = regularized.fit(_x((8,)), np.zeros((16, 2), "float32"), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_regularize_model_of_an_uncompiled_model_is_uncompiled():
    assert not regularize_model(_dense_with_lambda(), li=1e-3).compiled


def test_choose_threshold_with_a_custom_loss_and_a_lambda_metric():
    model = _compiled_with_custom_objects(_dense_with_lambda(with_lambda=False))
    kernel, bias = model.get_layer("hidden").get_weights()
    kernel[:, :4] = 1e-3  # small enough to prune at 1e-2 without changing the outputs much
    model.get_layer("hidden").set_weights([kernel, bias])
    x = _x((8,), n=64)
    y = to_numpy(model(x))
    chosen, scores = choose_threshold(model, x, y, thresholds=[1e-2], tolerance=1e-2)
    assert scores[0.0] == pytest.approx(0.0, abs=1e-9)
    assert chosen == 1e-2
