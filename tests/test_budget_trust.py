"""prune_to_budget keeps its promise: within the budget, or a BudgetError that says why."""

import keras
import numpy as np
import pytest
from hand_macs import model_macs

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


def _prune(model, data=None, **kwargs):
    """`prune_to_budget` on the first 3/4 of `data` (default `_data()`), validated on the rest."""
    x, y = _data() if data is None else data
    split = len(x) * 3 // 4
    # The penalty schedule: these tests are about its controller.
    args = dict(target_macs=0.5, li=1e-3, lo=1e-3, epochs=10, batch_size=64, schedule="penalty")
    args.update(max_accuracy_drop=1.0, finetune_epochs=1)
    args.update(kwargs)
    return prune_to_budget(model, (x[:split], y[:split]), (x[split:], y[split:]), **args)


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


def test_one_optimizer_instance_serves_several_calls():
    optimizer = keras.optimizers.Adam(1e-2)
    for target in (0.6, 0.5):
        _, report = _prune(_mlp(), target_macs=target, optimizer=optimizer)
        assert report.ratios["macs"] <= target
    assert not optimizer.built  # the instance is a recipe: the copies get their own


def test_not_reached_advises_optimizer_steps_when_the_scale_is_already_high():
    # A learning rate too small to move the weights: the controller raises the scale in vain.
    with pytest.raises(BudgetError, match="not reached") as info:
        _prune(_mlp(), optimizer=keras.optimizers.SGD(1e-7), epochs=3, frequency=2)
    message = str(info.value)
    assert "higher learning rate" in message and "`epochs=`" in message
    assert "`li=`" not in message


def test_sequence_outputs_with_a_label_per_step():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, 6, 4)).astype("float32")
    y = (x[..., 0] > 0).astype("int32")  # (n, T) labels for (n, T, 2) scores
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((6, 4)), L.Dense(16, activation="relu"), L.Dense(2, activation="softmax")]
    )
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    _, report = _prune(model, (x, y), target_macs=0.6, batch_size=16)
    assert report.ratios["macs"] <= 0.6
    assert 0.0 <= report.error_after <= 1.0  # an error rate over the steps


def _two_inputs():
    first, second = keras.Input((20,), name="first"), keras.Input((20,), name="second")
    hidden = L.Dense(8, activation="relu")(L.Concatenate()([first, second]))
    return keras.Model([first, second], L.Dense(2, activation="softmax")(hidden))


def _two_outputs():
    inputs = keras.Input((20,))
    hidden = L.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, [L.Dense(2, name="kind")(hidden), L.Dense(1, name="size")(hidden)])


def test_several_outputs_are_refused_by_name():
    model = _two_outputs()
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data(2)
    with pytest.raises(ValueError, match="`model`.*one output.*2 outputs.*'kind'"):
        prune_to_budget(model, (x, [y, y]), (x, [y, y]), target_macs=0.5)


@pytest.mark.parametrize("as_dict", [True, False])
def test_several_inputs_take_a_dict_or_a_list(as_dict):
    keras.utils.set_random_seed(0)
    model = _two_inputs()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = _data()
    other, _ = _data(seed=1)
    split = len(x) * 3 // 4

    def part(rows):
        if as_dict:
            return {"first": x[rows], "second": other[rows]}
        return [x[rows], other[rows]]

    train, val = slice(None, split), slice(split, None)
    slim, report = prune_to_budget(
        model,
        (part(train), y[train]),
        (part(val), y[val]),
        target_macs=0.5,
        li=1e-3,
        lo=1e-3,
        epochs=10,
        batch_size=64,
        max_accuracy_drop=1.0,
    )
    assert model_macs(slim) <= 0.5 * model_macs(model)
    assert report.ratios["macs"] == pytest.approx(model_macs(slim) / model_macs(model))


def test_inputs_named_wrongly_are_refused():
    model = _two_inputs()
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data(8)
    with pytest.raises(
        ValueError, match=r"`train_data`.*\['first', 'second'\].*\['first', 'third'\]"
    ):
        prune_to_budget(
            model, ({"first": x, "third": x}, y), ({"first": x, "second": x}, y), target_macs=0.5
        )


def test_the_report_names_the_users_own_regularizers_that_the_slim_model_drops():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((20,)),
            L.Dense(32, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4)),
            L.Dense(16, activation="relu", bias_regularizer=keras.regularizers.L1(1e-4)),
            L.Dense(2, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    slim, report = _prune(model)
    first, second = model.layers[0].kernel.path, model.layers[1].bias.path
    assert report.dropped_regularizers == [f"{first}: L2", f"{second}: L1"]
    assert f"{first}: L2" in str(report) and "not on the slim model" in str(report)
    assert all(getattr(w, "regularizer", None) is None for w in slim.weights)


def test_not_reached_after_a_callback_stopped_training_says_so():
    # The penalties raise the loss each epoch, so EarlyStopping on it stops after a few.
    stopping = keras.callbacks.EarlyStopping(monitor="loss", patience=0)
    with pytest.raises(BudgetError, match="not reached") as info:
        _prune(_mlp(), target_macs=0.05, li=1e-5, lo=1e-5, callbacks=[stopping])
    message = str(info.value)
    assert "of 10 epochs by one of your callbacks (EarlyStopping)" in message
    assert "Train longer" not in message
