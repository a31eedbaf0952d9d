"""The penalized copy is compiled from the model's live compiled objects."""

import keras
import numpy as np
import pytest

from keras_dropneuron import prune_to_budget, regularize_model
from keras_dropneuron.cloning import uncompiled
from keras_dropneuron.compiling import compile_like

L = keras.layers


def my_loss(y_true, y_pred):
    """A custom loss that no one registered with Keras."""
    return keras.ops.mean(keras.ops.square(y_pred - y_true), axis=-1)


class ScaledMean(keras.metrics.Mean):
    """A custom metric whose config lacks its required argument."""

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(self.scale * y_pred, sample_weight=sample_weight)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), L.Dense(8, activation="relu"), L.Dense(1)])


def _copy(model):
    compiled = model.compiled
    with uncompiled(model):
        copy = regularize_model(model, li=1e-4, lo=1e-4)
    assert model.compiled == compiled and not copy.compiled
    return copy


def _data(n=64):
    x = np.random.default_rng(0).normal(size=(n, 6)).astype("float32")
    return x, x[:, :1].copy()


@pytest.mark.parametrize(
    ("loss", "given"),
    [(my_loss, False), (my_loss, True), ("mse", False)],
    ids=["custom loss", "custom loss, loss and optimizer given", "lambda metric"],
)
def test_prune_to_budget_trains_with_an_unregistered_loss_or_metric(loss, given):
    model = _model()
    model.compile("adam", loss=loss, metrics=[lambda y_true, y_pred: y_pred[:, 0]])
    overrides = {"loss": my_loss, "optimizer": keras.optimizers.SGD(1e-3)} if given else {}
    x, y = _data()
    slim, report = prune_to_budget(
        model, (x, y), (x, y), target_units=1.0, epochs=1, finetune_epochs=0, **overrides
    )
    assert report.ratios["units"] == 1.0
    np.testing.assert_allclose(slim.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.5)


def test_given_loss_and_optimizer_are_enough_when_the_compile_config_cannot_be_read():
    model = _model()
    model.compile("adam", loss="mse")
    model.get_compile_config = lambda: {"loss": {"class_name": "function", "config": "gone"}}
    copy = _copy(model)
    compile_like(copy, model, keras.optimizers.SGD(1e-3), "mae")
    assert copy.loss == "mae" and isinstance(copy.optimizer, keras.optimizers.SGD)


def test_the_copy_follows_the_model_with_its_own_optimizer_and_metrics():
    model = _model()
    accuracy = keras.metrics.MeanAbsoluteError(name="mae_metric")
    model.compile(keras.optimizers.Adam(3e-3), loss=my_loss, metrics=[accuracy, "mse"])
    copy = _copy(model)
    compile_like(copy, model)
    assert copy.loss is my_loss
    assert type(copy.optimizer) is keras.optimizers.Adam
    assert copy.optimizer is not model.optimizer
    assert float(copy.optimizer.learning_rate) == pytest.approx(3e-3)
    x, y = _data()
    logs = copy.fit(x, y, epochs=1, verbose=0).history
    assert {"loss", "mae_metric", "mse"} <= set(logs)
    assert accuracy.count.numpy() == 0  # the model's own metric is not updated by the copy


def test_a_metric_that_cannot_be_rebuilt_is_left_out_with_a_warning():
    model = _model()
    model.compile("adam", loss="mse", metrics=[ScaledMean(2.0, name="scaled"), "mae"])
    copy = _copy(model)
    with pytest.warns(UserWarning, match="metrics entry 'scaled'.*trained without it"):
        compile_like(copy, model)
    x, y = _data()
    logs = copy.fit(x, y, epochs=1, verbose=0).history
    assert "mae" in logs and "scaled" not in logs


def test_a_loss_is_required_from_the_model_or_the_caller():
    model = _model()
    copy = _copy(model)
    with pytest.raises(ValueError, match="argument `loss`.*Received: loss=None"):
        compile_like(copy, model)
    compile_like(copy, model, loss="mse")
    assert copy.loss == "mse" and isinstance(copy.optimizer, keras.optimizers.Adam)
