"""Budgets that land where asked: the ranking cut, the gradual schedule and the loss guard."""

import keras
import numpy as np
import pytest

from keras_dropneuron import BudgetCallback, BudgetError, prune_to_budget, regularize_model
from keras_dropneuron.budget.ranking import UnitRanking
from keras_dropneuron.masking import WeightMasks
from keras_dropneuron.model_utils import select_layers
from keras_dropneuron.surgery.size import slim_size_ratios

L = keras.layers


def _data(n=768, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 20)).astype("float32")
    y = (x[:, :3].sum(axis=1) > 0).astype("int32")
    return x, y


def _bn_mlp(seed=0):
    """20 -> Dense 32 -> BN -> ReLU -> Dense 16 -> BN -> ReLU -> Dense 2 (softmax)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((20,))
    h = inputs
    for units, name in ((32, "a"), (16, "b")):
        h = L.Dense(units, name=name)(h)
        h = L.BatchNormalization(name=f"{name}_bn")(h)
        h = L.ReLU()(h)
    model = keras.Model(inputs, L.Dense(2, activation="softmax", name="out")(h))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def _trained_bn_mlp():
    model = _bn_mlp()
    x, y = _data()
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    return model


def _ranking(model):
    masks = WeightMasks(model, select_layers(model))
    masks.install()  # the mask variables that trials leave alone
    return UnitRanking(masks, masks.values()), masks


def _numpy_scores(model, name):
    """The unit's joint group norm (kernel column, gamma, beta) over its layer's mean."""
    kernel = model.get_layer(name).kernel.numpy()
    norm = model.get_layer(f"{name}_bn")
    squares = (kernel**2).sum(axis=0) + norm.gamma.numpy() ** 2 + norm.beta.numpy() ** 2
    scores = np.sqrt(squares)
    return scores / scores.mean()


def test_the_ranking_orders_units_by_their_joint_group_over_the_layer_mean():
    model = _trained_bn_mlp()
    ranking, _ = _ranking(model)
    expected = []
    for name in ("a", "b"):
        scores = _numpy_scores(model, name)
        strongest = int(np.argmax(scores))
        expected += [(s, name, u) for u, s in enumerate(scores) if u != strongest]
    expected.sort()
    names = {}
    for layer_index, ranked in enumerate(ranking.layers):
        names[layer_index] = ranked.layer.name
    got = [(names[i], u) for i, u in ranking.order]
    # The model's outputs ("out") stay in the slim model: they are never cut.
    assert got == [(n, u) for _, n, u in expected]


def test_a_cut_zeroes_exactly_the_weakest_groups_with_their_gamma_and_beta():
    model = _trained_bn_mlp()
    ranking, masks = _ranking(model)
    keeps = ranking.keeps(5)
    cut = ranking.order[:5]
    for (layer, layout, _), keep in zip(masks.weights, keeps, strict=True):
        gone = [u for i, u in cut if ranking.layers[i].layer is layer]
        columns = keep.reshape(-1, keep.shape[-1]).all(axis=0)
        assert sorted(np.flatnonzero(~columns)) == sorted(gone), layout.attribute


def test_the_cut_count_is_the_fewest_units_that_meet_the_target():
    model = _trained_bn_mlp()
    ranking, masks = _ranking(model)
    count = ranking.cut_count("macs", 0.5)
    masks.assign(ranking.values, ranking.keeps(count))
    assert slim_size_ratios(model)["macs"] <= 0.5
    masks.assign(ranking.values, ranking.keeps(count - 1))
    assert slim_size_ratios(model)["macs"] > 0.5
    ranking.restore()
    np.testing.assert_array_equal(masks.values()[0], ranking.values[0])


@pytest.mark.parametrize("schedule, strength", [("penalty", 1e-2), ("gradual", 4e-4)])
def test_prune_to_budget_lands_within_three_percent_under_the_target(schedule, strength):
    x, y = _data()
    model = _trained_bn_mlp()
    _, report = prune_to_budget(
        model,
        (x[:512], y[:512]),
        (x[512:], y[512:]),
        target_macs=0.4,
        epochs=8,
        finetune_epochs=1,
        batch_size=64,
        schedule=schedule,
        li=strength,
        lo=strength,
        max_accuracy_drop=1.0,
    )
    assert 0.4 * 0.97 <= report.ratios["macs"] <= 0.4


def test_the_gradual_schedule_follows_the_cubic_curve():
    x, y = _data()
    model = regularize_model(_trained_bn_mlp(), li=1e-4, lo=1e-4)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    callback = BudgetCallback(target_units=0.5, schedule="gradual", target_epoch=4)
    history = model.fit(x, y, epochs=5, batch_size=64, verbose=0, callbacks=[callback])
    units = history.history["units_ratio"]
    for epoch in range(4):
        scheduled = 0.5 + 0.5 * (1 - (epoch + 1) / 4) ** 3
        # At most the schedule, and within one of the 50 units below it.
        assert scheduled - 1 / 50 - 1e-9 <= units[epoch] <= scheduled + 1e-9
    # Reached at the first event that lands on the target (the last cut may get there early).
    assert callback.reached_epoch == min(e for e in range(5) if units[e] <= 0.5) <= 3


def test_a_threshold_that_would_empty_a_layer_leaves_the_ranking_to_cut():
    """A threshold above every unit's norm would empty the layers: the ranking cuts alone."""
    x, y = _data()
    model = regularize_model(_trained_bn_mlp(), li=1e-4, lo=1e-4)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    callback = BudgetCallback(target_units=0.5, schedule="gradual", threshold=1e3, target_epoch=2)
    history = model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[callback])
    units = history.history["units_ratio"]
    assert callback.reached and 0.5 - 1 / 50 - 1e-9 <= units[-1] <= 0.5 + 1e-9
    for name in ("a", "b"):  # no layer emptied
        assert np.any(model.get_layer(name).kernel.numpy() != 0, axis=0).sum() >= 1


def _guard_history(loss_guard):
    x, y = _data()
    model = regularize_model(_trained_bn_mlp(), li=1e-2, lo=1e-2)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    # Growth 4 and a target the task cannot afford: the scale would run away.
    callback = BudgetCallback(
        target_units=0.1, growth=4.0, loss_guard=loss_guard, guard_data=(x[512:], y[512:])
    )
    return model.fit(
        x[:512],
        y[:512],
        epochs=8,
        batch_size=64,
        verbose=0,
        callbacks=[callback],
    ).history


def test_the_controller_backs_off_when_the_validation_loss_leaves_its_floor():
    guarded = _guard_history(1.0)
    scales, departed = guarded["penalty_scale"], guarded["backing_off"]
    assert any(departed), "the task must trip the guard for this test to mean anything"
    data_loss = np.array(guarded["data_loss"])
    assert data_loss[0] > 0
    for epoch in range(1, len(scales)):
        floor = data_loss[: epoch + 1].min()
        assert departed[epoch] == int(data_loss[epoch] > 2 * floor)
        if departed[epoch]:
            assert scales[epoch] < scales[epoch - 1]
    unguarded = _guard_history(None)
    assert max(unguarded["penalty_scale"]) > max(scales)


def test_bad_schedule_and_loss_guard_are_refused():
    with pytest.raises(ValueError, match="schedule"):
        BudgetCallback(target_macs=0.5, schedule="cubic")
    with pytest.raises(ValueError, match="loss_guard"):
        BudgetCallback(target_macs=0.5, loss_guard=0.0)
    with pytest.raises(TypeError, match="guard_data.*Received: a list"):
        BudgetCallback(target_macs=0.5, guard_data=[np.zeros(3), np.zeros(3)])


def test_the_guard_measures_the_compiled_loss_without_penalties():
    x, y = _data()
    model = regularize_model(_trained_bn_mlp(), li=1.0, lo=1.0)  # penalties that dwarf the loss
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    # No pruning event in this epoch (warm-up): the weights after fit are those measured.
    callback = BudgetCallback(target_units=0.9, guard_data=(x[512:], y[512:]), warmup_epochs=1)
    history = model.fit(x[:512], y[:512], epochs=1, verbose=0, callbacks=[callback])
    probabilities = model.predict(x[512:], verbose=0)
    expected = -np.mean(np.log(probabilities[np.arange(256), y[512:]]))
    assert history.history["data_loss"][0] == pytest.approx(expected, rel=1e-4)


def test_a_gradual_target_the_ranking_cannot_reach_is_refused_with_its_floor():
    x, y = _data()
    model = regularize_model(_bn_mlp(), li=1e-4, lo=1e-4)
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = BudgetCallback(target_params=0.01, schedule="gradual")
    with pytest.raises(BudgetError, match="schedule='gradual'.*keeps 0.0"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])


def test_the_cli_schedule_option_reaches_prune_to_budget(tmp_path, monkeypatch, capsys):
    from keras_dropneuron import budget
    from keras_dropneuron.cli import main

    x, y = _data(64)
    model = _bn_mlp()
    path, data = tmp_path / "model.keras", tmp_path / "data.npz"
    model.save(path)
    np.savez(data, x=x, y=y)
    received = []

    def fake(model, train, val, **kwargs):
        received.append(kwargs["schedule"])
        return model, "the report"

    monkeypatch.setattr(budget, "prune_to_budget", fake)
    command = ["prune", str(path), "--data", str(data), "-o", str(tmp_path / "s.keras")]
    assert main([*command, "--target-macs", "0.5"]) == 0
    assert main([*command, "--target-macs", "0.5", "--schedule", "penalty"]) == 0
    assert received == ["auto", "penalty"]
    with pytest.raises(SystemExit):
        main([*command, "--target-macs", "0.5", "--schedule", "cubic"])
    assert "invalid choice: 'cubic'" in capsys.readouterr().err


def _cnn(seed=0):
    """Conv 16 -> BN -> ReLU -> pool, conv 32 -> BN -> ReLU -> pool, Dense 64, Dense 10."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((24, 24, 1))
    h = inputs
    for filters in (16, 32):
        h = L.Conv2D(filters, 3, padding="same")(h)
        h = L.BatchNormalization()(h)
        h = L.MaxPooling2D()(L.ReLU()(h))
    h = L.Dense(64, activation="relu")(L.Flatten()(h))
    model = keras.Model(inputs, L.Dense(10, activation="softmax")(h))
    # numpy weights: the same ranking on every backend (their initializers differ).
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            np.abs(rng.normal(size=w.shape)) + 0.1
            if "variance" in w.path
            else rng.normal(size=w.shape)
            for w in model.weights
        ]
    )
    return model


@pytest.mark.parametrize("target", [0.3, 0.65, 0.75])
def test_the_final_cut_gives_back_units_that_fit_under_the_target(target):
    from keras_dropneuron.budget.ranking import CLOSE_ENOUGH, ranked_cut

    model = _cnn()
    ranking, masks = _ranking(model)
    values = masks.values()
    count = ranking.cut_count("macs", target)
    plain = ranking.kept(count)["macs"]
    refilled = ranked_cut(masks, values, values, "macs", target, target * CLOSE_ENOUGH)
    # What the surgeon would build from the written weights is what was returned.
    assert slim_size_ratios(model)["macs"] == pytest.approx(refilled["macs"])
    assert plain <= refilled["macs"] <= target
    if target == 0.65:  # a costly filter crossed the line: the plain cut lands 7% under
        assert plain < 0.95 * target
        assert refilled["macs"] >= 0.97 * target


def test_auto_takes_the_gradual_schedule_only_where_the_ranking_reaches_the_target():
    x, y = _data(128)
    dense = regularize_model(_bn_mlp(), li=1e-4, lo=1e-4)
    recurrent_inputs = keras.Input((4, 5))
    recurrent = keras.Model(
        recurrent_inputs, L.Dense(2, activation="softmax")(L.LSTM(8)(recurrent_inputs))
    )
    recurrent = regularize_model(recurrent, li=1e-4, lo=1e-4)
    # The ranking does not cut embedding dimensions: only the penalties reach the target.
    tokens = keras.Input((4,), dtype="int32")
    pooled = L.GlobalAveragePooling1D()(L.Embedding(10, 8)(tokens))
    embedded = keras.Model(tokens, L.Dense(2, activation="softmax")(pooled))
    embedded = regularize_model(embedded, li=1e-4, lo=1e-4)
    for model, inputs, expected in (
        (dense, x, "gradual"),
        (recurrent, x.reshape(-1, 4, 5), "gradual"),
        (embedded, (np.abs(x[:, :4]) * 3 % 10).astype("int32"), "penalty"),
    ):
        model.compile("adam", "sparse_categorical_crossentropy")
        callback = BudgetCallback(target_units=0.6, schedule="auto")
        assert callback.active_schedule == "penalty"  # until training starts
        model.fit(inputs, y, epochs=1, verbose=0, callbacks=[callback])
        assert callback.active_schedule == expected
