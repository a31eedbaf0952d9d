"""Pruning to a budget: BudgetCallback's controller and prune_to_budget."""

import math
import os

import keras
import numpy as np
import pytest
from backend_utils import BACKEND, sync, to_numpy

from keras_dropneuron import (
    BudgetCallback,
    BudgetError,
    DropNeuronRegularizer,
    LiRegularizer,
    LoRegularizer,
    prune_to_budget,
    regularize_model,
    slim_model,
)
from keras_dropneuron.cli import main
from keras_dropneuron.surgery.size import slim_size_ratios

L = keras.layers
TARGETS = ("target_macs", "target_params", "target_units")


def _data(n=2048, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 50)).astype("float32")
    y = (x[:, :5].sum(axis=1) > 0).astype("int32")
    return x, y


def _mlp(seed=0):
    """50 inputs (5 informative) -> 64 -> 32 -> 2 class scores."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((50,)),
            L.Dense(64, activation="relu", name="h1"),
            L.Dense(32, activation="relu", name="h2"),
            L.Dense(2, name="out"),
            L.Softmax(),
        ]
    )


def _penalized(strength=1e-3):
    model = regularize_model(_mlp(), li=strength, lo=strength)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def _dense_macs(model):
    """Multiply-adds of a chain of Dense layers, from the kernels' shapes."""
    return sum(
        math.prod(layer.kernel.shape) for layer in model.layers if isinstance(layer, L.Dense)
    )


def test_the_controller_reaches_a_synthetic_target():
    model = _penalized()
    x, y = _data()
    callback = BudgetCallback(target_macs=0.3)
    history = model.fit(x, y, epochs=10, batch_size=64, verbose=0, callbacks=[callback])
    assert callback.reached, history.history["macs_ratio"]
    # It lands within the tolerance (10%) below the target, never above it.
    assert 0.27 <= callback.ratios["macs"] <= 0.3
    # The figures are in the logs, hence in History.
    logs = history.history
    for key in ("macs_ratio", "params_ratio", "units_ratio", "penalty_scale", "budget_reached"):
        assert len(logs[key]) == len(history.epoch)
    assert logs["budget_reached"][-1] == 1
    assert logs["macs_ratio"][-1] == pytest.approx(callback.ratios["macs"])
    # The logged ratio is that of the slim model the surgeon builds.
    sync(model)
    slim = slim_model(model)
    assert _dense_macs(slim) / _dense_macs(model) == pytest.approx(callback.ratios["macs"])
    # The controller acted: every change of the scale is a factor of growth (1.5), its
    # square when nothing moved, or its inverse when pruning ran ahead; then it is held.
    scales = np.asarray(logs["penalty_scale"])
    factors = np.log(scales[1:] / scales[:-1]) / np.log(1.5)
    np.testing.assert_allclose(factors, np.round(factors), atol=1e-6)
    assert set(np.round(factors)) <= {-1, 0, 1, 2} and np.any(np.round(factors) != 0)
    reached_at = logs["budget_reached"].index(1)
    assert np.all(scales[reached_at:] == scales[reached_at])


def test_slim_size_ratios_count_the_model_the_surgeon_builds():
    model = _mlp()
    h1, h2 = model.get_layer("h1"), model.get_layer("h2")
    h1.kernel.assign(np.where(np.arange(64) < 40, 0.0, h1.kernel.numpy()))  # 24 units live
    h2.kernel.assign(np.where(np.arange(32) < 24, 0.0, h2.kernel.numpy()))  # 8 units live
    # h1's dead units are constants (ReLU of their bias, 0) that h2 no longer reads.
    macs = 50 * 24 + 24 * 8 + 8 * 2
    params = (50 * 24 + 24) + (24 * 8 + 8) + (8 * 2 + 2)
    ratios = slim_size_ratios(model)
    assert ratios["macs"] == pytest.approx(macs / _dense_macs(model))
    assert ratios["params"] == pytest.approx(params / model.count_params())
    assert ratios["units"] == pytest.approx((24 + 8 + 2) / (64 + 32 + 2))


def test_strengths_are_restored_and_the_callback_serializes():
    model = _penalized()
    x, y = _data(512)
    regularizers = {id(v): v.regularizer for v in model.weights if v.regularizer is not None}
    configs = {key: reg.get_config() for key, reg in regularizers.items()}
    callback = BudgetCallback(target_params=0.5, growth=3.0, tolerance=0.2, on_target="release")
    model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[callback])
    for variable in model.weights:
        if id(variable) in regularizers:
            assert variable.regularizer is regularizers[id(variable)]
            assert variable.regularizer.get_config() == configs[id(variable)]
            assert variable.constraint is None
    config = callback.get_config()
    assert config["target_params"] == 0.5 and config["target_macs"] is None
    assert all(isinstance(v, int | float | str | bool | type(None)) for v in config.values())
    assert BudgetCallback(**config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(callback))
    assert type(restored) is BudgetCallback and restored.get_config() == config


class CountingRegularizer(DropNeuronRegularizer):
    """Counts its calls: on TensorFlow and JAX only tracing the train step calls it."""

    calls = 0

    def __call__(self, x):
        CountingRegularizer.calls += 1
        return super().__call__(x)


def test_a_new_scale_reaches_the_compiled_step_without_retracing():
    class Scripted(BudgetCallback):
        """The controller replaced by a script: scale 1e-9, then 1e4 from epoch 1."""

        def _budget_event(self, epoch):
            self.calls_after_first_epoch = CountingRegularizer.calls
            self._set_scale(1e4)

    x, y = _data(512)
    losses = {}
    for name, callback in (
        ("steady", BudgetCallback(target_macs=0.1, initial_scale=1e-9, warmup_epochs=5)),
        ("scripted", Scripted(target_macs=0.1, initial_scale=1e-9)),
    ):
        keras.utils.set_random_seed(0)
        reg = CountingRegularizer(li=1e-2, lo=1e-2)
        model = keras.Sequential(
            [
                keras.Input((50,)),
                L.Dense(64, activation="relu", name="h1", kernel_regularizer=reg),
                L.Dense(32, activation="relu", name="h2", kernel_regularizer=reg),
                L.Dense(2, name="out"),
            ]
        )
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
        history = model.fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=[callback])
        losses[name] = history.history["loss"]
    if BACKEND != "torch":  # PyTorch runs the step eagerly: every step calls it
        assert CountingRegularizer.calls == callback.calls_after_first_epoch
    # The same first epoch; then the penalties, 10^13 times as strong, dominate the loss.
    assert losses["scripted"][0] == pytest.approx(losses["steady"][0], rel=1e-4)
    for epoch in (1, 2):
        assert losses["scripted"][epoch] > 100 * losses["steady"][epoch]


def test_it_works_with_penalties_attached_by_hand():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((50,)),
            L.Dense(64, "relu", name="h1", kernel_regularizer=LoRegularizer(1e-3)),
            L.Dense(32, "relu", name="h2", kernel_regularizer=LiRegularizer(1e-3)),
            L.Dense(2, name="out"),
            L.Softmax(),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = _data()
    # An event every 16 of the 32 batches of an epoch.
    callback = BudgetCallback(target_units=0.6, frequency=16, growth=1.25)
    model.fit(x, y, epochs=10, batch_size=64, verbose=0, callbacks=[callback])
    assert callback.reached
    # The units of the slim model the surgeon builds, of 64 + 32 + 2 in the Dense layers.
    slim = slim_model(model)
    units = sum(slim.get_layer(name).units for name in ("h1", "h2", "out"))
    assert slim_size_ratios(model)["units"] == pytest.approx(units / (64 + 32 + 2))
    # At most the target; units can die in groups between two events, so the landing can be
    # below the 10% window here (0.52 on JAX), which the synthetic test checks on MACs.
    assert 0.45 <= units / (64 + 32 + 2) <= 0.6


def test_a_model_without_penalties_is_refused():
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _data(64)
    with pytest.raises(ValueError, match="no DropNeuron penalty"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[BudgetCallback(target_macs=0.5)])


def test_a_model_at_the_target_is_reached_at_once():
    model = _penalized()
    x, y = _data(256)
    callback = BudgetCallback(target_macs=1.0, on_target="release")
    history = model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert callback.reached_epoch == -1
    assert history.history["penalty_scale"] == [0.0]


def test_an_unreachable_budget_stops_with_a_clear_message():
    model = _penalized()
    x, y = _data(256)
    before = {id(v): v.regularizer for v in model.weights if v.regularizer is not None}
    with pytest.raises(BudgetError, match="cannot be reached without emptying a layer") as info:
        model.fit(x, y, epochs=3, verbose=0, callbacks=[BudgetCallback(target_macs=1e-3)])
    # The smallest model keeps one unit per pruned layer: 50*1 + 1*1 + 1*2 of 50*64 + 64*32 + 32*2.
    smallest = (50 + 1 + 2) / (50 * 64 + 64 * 32 + 32 * 2)
    assert info.value.ratios["macs"] == pytest.approx(smallest)
    assert f"{smallest:.4g}" in str(info.value)
    for variable in model.weights:  # nothing is left on the model
        if id(variable) in before:
            assert variable.regularizer is before[id(variable)]
            assert variable.constraint is None


BAD_TARGETS = [
    ({"target_macs": 0}, ValueError, "in \\(0, 1\\]"),
    ({"target_macs": 1.5}, ValueError, "in \\(0, 1\\]"),
    ({"target_params": float("nan")}, ValueError, "in \\(0, 1\\]"),
    ({"target_units": -0.2}, ValueError, "in \\(0, 1\\]"),
    ({"target_macs": "0.5"}, TypeError, "target_macs"),
    ({"target_macs": True}, TypeError, "target_macs"),
    ({}, ValueError, "exactly one of target_macs, target_params, target_units"),
    ({"target_macs": 0.5, "target_params": 0.5}, ValueError, "exactly one of"),
    ({"target_flops": 0.5}, TypeError, "Unknown kind of budget: target_flops"),
]


@pytest.mark.parametrize(("targets", "error", "match"), BAD_TARGETS)
def test_bad_targets_are_refused(targets, error, match):
    with pytest.raises(error, match=match):
        BudgetCallback(**targets)
    x, y = _data(32)
    with pytest.raises(error, match=match):
        prune_to_budget(_mlp(), (x, y), (x, y), **targets)


def test_other_bad_arguments_name_themselves():
    for kwargs, name in (
        ({"growth": 1.0}, "growth"),
        ({"tolerance": 1.0}, "tolerance"),
        ({"on_target": "stop"}, "on_target"),
        ({"initial_scale": 0.0}, "initial_scale"),
        ({"lookahead": 0.5}, "lookahead"),
        ({"target_epoch": 0}, "target_epoch"),
    ):
        with pytest.raises(ValueError, match=f"`{name}`"):
            BudgetCallback(target_macs=0.5, **kwargs)
    with pytest.raises(TypeError, match="unexpected keyword argument 'treshold'"):
        BudgetCallback(target_macs=0.5, treshold=0.1)


def test_prune_to_budget_checks_its_data_before_training():
    model = _mlp()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = _data(64)
    weights = [w.copy() for w in model.get_weights()]
    nan = x.copy()
    nan[3, 1] = np.nan
    for train, val, name, match in (
        ((x[:, :-1], y), (x, y), "train_data", r"expected x of shape \(n, 50\)"),
        ((nan, y), (x, y), "train_data", "finite"),
        ((x, y), (x, y[:10]), "val_data", r"y of shape \(10,\)"),
        ((x,), (x, y), "train_data", "tuple"),
    ):
        with pytest.raises((ValueError, TypeError), match=match) as info:
            prune_to_budget(model, train, val, target_macs=0.5)
        assert f"`{name}`" in str(info.value)
    for w, before in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(w, before)  # nothing trained


def test_prune_to_budget_returns_a_verified_slim_model_within_the_budget():
    model = _mlp()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = _data(3072)
    model.fit(x[:2048], y[:2048], epochs=5, batch_size=64, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    slim, report = prune_to_budget(
        model,
        (x[:2048], y[:2048]),
        (x[2048:], y[2048:]),
        target_macs=0.4,
        li=1e-3,
        lo=1e-3,
        epochs=10,
        max_accuracy_drop=0.05,
        batch_size=64,
    )
    # Counted on the slim model itself, from its kernels' shapes.
    ratio = _dense_macs(slim) / _dense_macs(model)
    assert report.ratios["macs"] == pytest.approx(ratio)
    assert 0.36 <= ratio <= 0.4
    assert report.ratios["params"] == pytest.approx(slim.count_params() / model.count_params())
    # slim_model verified it: the measured deviation is within its tolerance.
    assert report.slim_report.max_deviation <= report.slim_report.tolerance
    error = np.mean(np.argmax(to_numpy(slim.predict(x[2048:], verbose=0)), 1) != y[2048:])
    before = np.mean(np.argmax(to_numpy(model.predict(x[2048:], verbose=0)), 1) != y[2048:])
    assert report.error_after == pytest.approx(error)
    assert report.error_before == pytest.approx(before)
    assert report.accuracy_drop == pytest.approx(error - before) and error - before <= 0.05
    assert not any(layer.get_config().get("kernel_regularizer") for layer in slim.layers)
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # the input model is untouched
    assert "target_macs=0.4" in str(report)
    if report.threshold == 0:  # the cuts left nothing below any threshold
        assert "no weight pruned after fine-tuning (threshold 0)" in str(report)
    else:
        assert f"threshold {report.threshold:g} after fine-tuning" in str(report)


def test_prune_to_budget_says_what_it_reached_when_accuracy_suffers():
    model = _mlp()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = _data(2048)
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    # Validation labels the original model gets all right: any change costs accuracy.
    x_val = _data(256, seed=1)[0]
    y_val = np.argmax(to_numpy(model.predict(x_val, verbose=0)), 1)
    with pytest.raises(BudgetError, match="more than max_accuracy_drop=0") as info:
        prune_to_budget(
            model,
            (x, y),
            (x_val, y_val),
            target_macs=0.3,
            li=1e-3,
            lo=1e-3,
            epochs=10,
            max_accuracy_drop=0.0,
            batch_size=64,
        )
    assert info.value.model is not None
    assert info.value.report.ratios["macs"] <= 0.3
    assert str(round(info.value.report.ratios["macs"], 4))[:5] in str(info.value)


# ---------------------------------------------------------------- command line


@pytest.fixture
def saved(tmp_path):
    model = _mlp()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y = _data(2048)
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    data = tmp_path / "train.npz"
    np.savez(data, x=x, y=y)
    return model, str(path), str(data)


def test_prune_verb_writes_a_slim_model_within_the_budget(saved, tmp_path, capsys):
    model, path, data = saved
    out = str(tmp_path / "slim.keras")
    options = ["--li", "1e-3", "--lo", "1e-3", "--learning-rate", "1e-2", "--batch-size", "64"]
    code = main(
        ["prune", path, "--data", data, "--target-macs", "0.5", "-o", out, *options]
        + ["--max-accuracy-drop", "0.05"]
    )
    assert code == 0, capsys.readouterr().err
    slim = keras.saving.load_model(out)
    assert 0.45 <= _dense_macs(slim) / _dense_macs(model) <= 0.5
    printed = capsys.readouterr().out
    assert "target_macs=0.5" in printed and "Slim report" in printed


def test_prune_help_states_the_data_format(capsys):
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a .npz file with two arrays: `x`" in text and "`y`, the integer class labels" in text


@pytest.mark.parametrize(
    ("options", "status", "message"),
    [
        (["--target-macs", "0"], 2, "in (0, 1]"),
        (["--target-macs", "1.5"], 2, "in (0, 1]"),
        (["--target-params", "nan"], 2, "in (0, 1]"),
        (["--target-flops", "0.5"], 2, "unrecognized arguments: --target-flops"),
        ([], 1, "exactly one of --target-macs, --target-params, --target-units"),
        (["--target-macs", "0.5", "--target-units", "0.5"], 1, "exactly one of"),
    ],
)
def test_prune_verb_refuses_bad_targets(saved, tmp_path, capsys, options, status, message):
    _, path, data = saved
    out = tmp_path / "slim.keras"
    try:
        code = main(["prune", path, "--data", data, "-o", str(out), *options])
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    assert code == status
    assert message in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


def test_prune_verb_checks_the_data_file(saved, tmp_path, capsys):
    _, path, _ = saved
    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=np.zeros((4, 50)), y=np.zeros(4))
    out = str(tmp_path / "slim.keras")
    assert main(["prune", path, "--data", str(bad), "--target-macs", "0.5", "-o", out]) == 1
    assert "has no array 'x'" in capsys.readouterr().err
    assert main(["prune", path, "--data", path, "--target-macs", "0.5", "-o", out]) == 1
    assert "must be a .npz file" in capsys.readouterr().err
    x = np.random.default_rng(0).normal(size=(20, 50))
    np.savez(bad, x=x[:, :10], y=np.zeros(20))
    assert main(["prune", path, "--data", str(bad), "--target-macs", "0.5", "-o", out]) == 1
    assert "--data: `x` has shape (20, 10); the model takes (n, 50)" in capsys.readouterr().err
    x[2, 3] = np.nan
    np.savez(bad, x=x, y=np.zeros(20))
    assert main(["prune", path, "--data", str(bad), "--target-macs", "0.5", "-o", out]) == 1
    assert "--data: `x` in" in capsys.readouterr().err
    assert not os.path.exists(out)
