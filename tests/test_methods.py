"""Training-method options of the frontier sweeps: checks, optimizers, penalties, cycles."""

import itertools

import keras
import numpy as np
import pytest

from keras_dropneuron import DropNeuronRegularizer
from keras_dropneuron.experiments import grid, methods, runner


def _mlp(li=1e-3, lo=2e-3):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(5, "relu", kernel_regularizer=DropNeuronRegularizer(li, lo)),
            keras.layers.Dense(3, kernel_regularizer=DropNeuronRegularizer(lo=lo)),
        ]
    )
    model.compile("sgd", "mse")
    return model


def _penalty(model):
    return float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))


def _numpy_penalty(model, li=1e-3, lo=2e-3, columns=None, rows=None):
    total = 0.0
    for layer, layer_li in zip(model.layers, (li, 0.0), strict=True):
        w = layer.kernel.numpy().astype("float64")
        c = np.ones(w.shape[1]) if columns is None or layer_li == 0 else columns[layer.name]
        r = np.ones(w.shape[0]) if rows is None else rows[layer.name]
        total += layer_li * np.sum(c * np.linalg.norm(w, axis=0))
        total += lo * np.sum(r * np.linalg.norm(w, axis=1))
    return total


@pytest.mark.parametrize(
    "training, match",
    [
        ({"nope": 1}, "'nope'"),
        ({"cosine_lr": -1}, "finite number >= 0"),
        ({"learning_rate": float("nan")}, "finite number >= 0"),
        ({"cycles": 2.5}, "whole number"),
        ({"sgd_momentum": 1.0}, r"\[0, 1\)"),
        ({"learning_rate": 0}, "> 0"),
        ({"proximal": 1, "reweight": 1}, "'reweight'"),
        ({"proximal": 1, "ramp_epochs": 3}, "'ramp_epochs'"),
    ],
)
def test_check_training_rejects_bad_options(training, match):
    with pytest.raises(ValueError, match=match):
        methods.check_training(training)


def test_penalty_variables_are_refused_on_jax(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    for training in ({"ramp_epochs": 2}, {"reweight": 1}):
        with pytest.raises(ValueError, match="TensorFlow or PyTorch"):
            methods.check_training(training)
    assert methods.check_training({"cosine_lr": 1}) == {"cosine_lr": 1}


def test_check_training_keeps_only_what_changes_the_recipe():
    training = {"cosine_lr": 0, "cycles": 1, "sgd_momentum": 0.0, "reweight": 1}
    assert methods.check_training(training) == {"reweight": 1}
    assert methods.check_training({"cycles": 2, "learning_rate": 0.5}, auto_threshold=0.0) == {
        "cycles": 2,
        "learning_rate": 0.5,
    }


def test_optimizer_cosine_schedule_and_sgd():
    adam = methods.optimizer({}, 1e-3, 100)
    assert isinstance(adam, keras.optimizers.Adam)
    assert float(adam.learning_rate) == pytest.approx(1e-3)
    sgd = methods.optimizer({"sgd_momentum": 0.9, "cosine_lr": 1}, 0.1, 100)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9
    schedule = sgd._learning_rate
    for step in (0, 25, 50, 100):
        expected = 0.1 * 0.5 * (1 + np.cos(np.pi * step / 100))
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-7)


def test_penalty_ramp_scales_every_penalty_and_restores_it():
    model = _mlp()
    full = _penalty(model)
    assert full == pytest.approx(_numpy_penalty(model), rel=1e-5)
    ramp = methods.PenaltyRamp(4)
    ramp.set_model(model)
    ramp.on_train_begin()
    logs = {}
    for epoch, scale in ((0, 0.25), (2, 0.75), (5, 1.0)):
        ramp.on_epoch_begin(epoch)
        assert _penalty(model) == pytest.approx(scale * full, rel=1e-5)
        ramp.on_epoch_end(epoch, logs)
        assert logs["penalty_scale"] == scale
    ramp.on_train_end()
    assert _penalty(model) == pytest.approx(full, rel=1e-5)
    # A second fit (a prune-and-retrain cycle) reads the same variable.
    variable = ramp.variable
    ramp.on_train_begin()
    ramp.on_epoch_begin(1)
    assert ramp.variable is variable
    assert _penalty(model) == pytest.approx(0.5 * full, rel=1e-5)


def test_reweighted_group_lasso_matches_numpy_weights():
    model = _mlp()
    w = model.layers[0].kernel.numpy()
    w[:, 1] = 0.0  # a dead unit: its weight is the largest, its norm is not in the mean
    model.layers[0].kernel.assign(w)
    reweight = methods.ReweightedGroupLasso()
    reweight.set_model(model)
    reweight.on_train_begin()
    # Before the first epoch's end every weight is 1: the plain group lasso.
    assert _penalty(model) == pytest.approx(_numpy_penalty(model), rel=1e-5)
    reweight.on_epoch_end(0)
    columns, rows = {}, {}
    for layer in model.layers:
        k = layer.kernel.numpy().astype("float64")
        for store, norms in (
            (columns, np.linalg.norm(k, axis=0)),
            (rows, np.linalg.norm(k, axis=1)),
        ):
            mean = norms[norms > 0].mean()
            store[layer.name] = mean / (norms + 0.1 * mean)
    assert columns[model.layers[0].name][1] == pytest.approx(10.0)
    expected = _numpy_penalty(model, columns=columns, rows=rows)
    assert _penalty(model) == pytest.approx(expected, rel=1e-5)
    reweight.on_train_end()
    assert _penalty(model) == pytest.approx(_numpy_penalty(model), rel=1e-5)


def test_training_options_are_grid_keys_with_labels():
    configs = grid.parse_grid("lenet-300-100", ["li=1e-4", "cosine_lr=0,1", "sgd_momentum=0.9"])
    assert [c["training"] for c in configs] == [
        {"sgd_momentum": 0.9},
        {"cosine_lr": 1.0, "sgd_momentum": 0.9},
    ]
    assert grid.config_label(configs[1]) == "li=0.0001,cosine_lr=1,sgd_momentum=0.9"
    # Configurations without method options keep their old labels (and point files).
    assert "training" not in grid.parse_grid("lenet-300-100", ["li=1e-4"])[0]
    with pytest.raises(ValueError, match="whole numbers"):
        grid.parse_grid("lenet-300-100", ["ramp_epochs=1.5"])
    with pytest.raises(ValueError, match="needs auto_threshold"):
        grid.parse_grid("lenet-300-100", ["cycles=1,3"])
    assert len(grid.parse_grid("lenet-300-100", ["cycles=1,3", "auto_threshold=0"])) == 2


def test_cycles_need_the_automatic_threshold(mnist_path):
    with pytest.raises(ValueError, match="auto_threshold"):
        runner.run_once(
            "lenet-300-100",
            "dropneuron",
            0,
            quick=True,
            mnist=mnist_path,
            verbose=0,
            training={"cycles": 2},
        )


def test_cycles_prune_after_each_part_and_retrain_between(monkeypatch):
    pruned = []  # (batches trained so far, where the weights are zero) after each pruning
    thresholds = []
    real_prune_weights = runner.prune_weights

    def weakest_input_threshold(model, x, y, tolerance, mode, score):
        # Just above the weakest input row still alive: every cycle prunes a new one.
        norms = np.linalg.norm(model.get_layer("hidden").kernel.numpy(), axis=1)
        thresholds.append(1.0001 * float(norms[norms > 0].min()))
        return thresholds[-1], {}

    def recording_prune_weights(model, *args, **kwargs):
        real_prune_weights(model, *args, **kwargs)
        zeros = [w == 0 for w in model.get_weights()]
        pruned.append((int(model.optimizer.iterations), zeros))

    monkeypatch.setattr(runner, "choose_threshold", weakest_input_threshold)
    monkeypatch.setattr(runner, "prune_weights", recording_prune_weights)
    result, model = runner.run_once(
        "sparse-regression",
        "dropneuron",
        0,
        epochs=4,
        finetune_epochs=1,
        verbose=0,
        auto_threshold=0.0,
        training={"cycles": 3},
    )
    # 3 penalized epochs in 3 parts of one epoch each (batch size 1), pruned after each.
    steps = int(500 * (1 - runner.VALIDATION_FRACTION))
    assert [batches for batches, _ in pruned] == [steps, 2 * steps, 3 * steps]
    assert result["chosen_threshold"] == thresholds[-1]
    # Each cycle prunes more, and what a cycle pruned stays zero through the
    # retraining that follows it and the fine-tuning.
    final = [w == 0 for w in model.get_weights()]
    for (_, before), (_, after) in itertools.pairwise([*pruned, (None, final)]):
        for was_zero, is_zero in zip(before, after, strict=True):
            assert np.all(is_zero[was_zero])
    counts = [sum(int(z.sum()) for z in zeros) for _, zeros in pruned]
    assert counts[0] < counts[1] < counts[2]


@pytest.mark.parametrize(
    "training",
    [{"cycles": 2, "cosine_lr": 1}, {"sgd_momentum": 0.9, "learning_rate": 0.05, "proximal": 1}],
)
def test_methods_run_end_to_end_and_slim_exactly(mnist_path, training):
    result, model = runner.run_once(
        "lenet-300-100",
        "dropneuron",
        0,
        epochs=2,
        mnist=mnist_path,
        verbose=0,
        auto_threshold=0.0,
        training=training,
        finetune_epochs=1,
        penalties={"prox_li": 1e-3, "prox_lo": 1e-3},
    )
    assert result["slim_matches"] and result["training"] == training
    assert result["method"] == ("proximal+auto" if "proximal" in training else "threshold+auto")
    assert isinstance(
        model.optimizer,
        keras.optimizers.SGD if "sgd_momentum" in training else keras.optimizers.Adam,
    )


def test_prox_input_lo_gives_the_first_layer_its_own_proximal_strength(mnist_path, monkeypatch):
    made = []

    class Recorder(methods.ProximalGroupShrinkage):
        def __init__(self, li=0.0, lo=0.0, layers=None):
            super().__init__(li, lo, layers)
            made.append((li, lo, layers))

    monkeypatch.setattr(methods, "ProximalGroupShrinkage", Recorder)
    penalties = {"prox_li": 1e-3, "prox_lo": 2e-3, "prox_input_lo": 5e-3}
    result, model = runner.run_once(
        "lenet-300-100",
        "dropneuron",
        0,
        "proximal",
        quick=True,
        mnist=mnist_path,
        verbose=0,
        penalties=penalties,
    )
    assert made == [(1e-3, 5e-3, ["fc1"]), (1e-3, 2e-3, ["fc2"])]
    assert result["slim_matches"] and result["penalties"] == penalties
    made.clear()
    runner.run_once(
        "lenet-300-100", "dropneuron", 0, "proximal", quick=True, mnist=mnist_path, verbose=0
    )
    assert made == [(0.5, 0.5, None)]  # without it: one step on every layer but the last
