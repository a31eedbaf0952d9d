"""The fine-tuning's learning rate: cosine decay to zero (`CosineAnneal`) in `prune_to_budget`."""

import keras
import numpy as np
import pytest

from keras_dropneuron import prune_to_budget
from keras_dropneuron.budget.anneal import CosineAnneal


class RecordRate(keras.callbacks.Callback):
    """The optimizer's learning rate at the start of every batch."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        rate = self.model.optimizer.learning_rate
        self.rates.append(float(keras.ops.convert_to_numpy(rate)))


def _data(n=256, features=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32")


def _model(optimizer, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    model.compile(optimizer, "sparse_categorical_crossentropy")
    return model


def test_cosine_anneal_follows_the_formula_and_restores_the_rate():
    x, y = _data()
    model = _model(keras.optimizers.SGD(0.2))
    record = RecordRate()
    history = model.fit(
        x, y, batch_size=64, epochs=3, callbacks=[CosineAnneal(), record], verbose=0
    )
    total = 3 * 4  # 256 samples in batches of 64, 3 epochs
    expected = 0.2 * 0.5 * (1 + np.cos(np.pi * np.arange(total) / total))
    np.testing.assert_allclose(record.rates, expected, rtol=1e-6)
    # The rate of each epoch's last batch is in the logs, as LearningRateScheduler writes it.
    np.testing.assert_allclose(history.history["learning_rate"], expected[3::4], rtol=1e-6)
    rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert rate == pytest.approx(0.2)


def test_cosine_anneal_leaves_a_learning_rate_schedule_alone():
    x, y = _data()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    model = _model(keras.optimizers.SGD(schedule))
    record = RecordRate()
    model.fit(x, y, batch_size=64, epochs=1, callbacks=[CosineAnneal(), record], verbose=0)
    np.testing.assert_allclose(record.rates, 0.1 * 0.5 ** np.arange(4), rtol=1e-6)


def _fine_tuning_rates(finetune_schedule):
    """The learning rates of `prune_to_budget`'s fine-tuning, seen by a user's callback."""
    x, y = _data(512)
    model = _model(keras.optimizers.Adam(0.01))
    model.fit(x, y, epochs=2, verbose=0)
    record = RecordRate()
    prune_to_budget(
        model,
        (x, y),
        (x[:128], y[:128]),
        target_units=0.8,
        epochs=4,
        finetune_epochs=2,
        batch_size=128,
        max_accuracy_drop=1.0,
        callbacks=[record],
        finetune_schedule=finetune_schedule,
    )
    return np.array(record.rates[-8:])  # the fine-tuning: 2 epochs of 4 batches


def test_prune_to_budget_fine_tunes_on_a_cosine_by_default():
    rates = _fine_tuning_rates("cosine")
    np.testing.assert_allclose(rates, 0.01 * 0.5 * (1 + np.cos(np.pi * np.arange(8) / 8)), 1e-5)


def test_prune_to_budget_constant_fine_tuning_rate():
    np.testing.assert_allclose(_fine_tuning_rates("constant"), 0.01, rtol=1e-6)


def test_bad_finetune_schedule_is_named():
    x, y = _data()
    model = _model("adam")
    with pytest.raises(ValueError, match="finetune_schedule.*'linear'"):
        prune_to_budget(model, (x, y), (x, y), target_units=0.5, finetune_schedule="linear")
