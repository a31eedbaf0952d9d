"""Every public function and class of the core against bad input.

Each row names the input, the call, the error and what its message must say. Calls
that take a model must leave it unchanged: same weights, same layer configs
(regularizers included).
"""

import argparse
import math

import keras
import numpy as np
import pytest

from keras_dropneuron import (
    DropNeuronRegularizer,
    LiRegularizer,
    LoRegularizer,
    ProximalGroupShrinkage,
    PruneCallback,
    choose_threshold,
    export_saved_model,
    export_tflite,
    prune_weights,
    regularize_model,
    slim_model,
    sparsity_report,
)
from keras_dropneuron.checks import argparse_type, check_int, check_non_negative_float

L = keras.layers
NAN, INF = float("nan"), float("inf")
X, Y = np.ones((4, 6), "float32"), np.ones((4, 1), "float32")


def mlp():
    return keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(5, name="h1", kernel_regularizer=LiRegularizer(1e-3)),
            L.LayerNormalization(name="norm"),
            L.Dense(4, name="h2"),
            L.Dense(1, name="out"),
        ]
    )


def no_supported_layers():
    return keras.Sequential([keras.Input((6,)), L.LayerNormalization(name="norm")])


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(3, name="h1")

    def call(self, x):
        return self.dense(x)


def subclassed():
    model = Subclassed()
    model(np.zeros((1, 6), "float32"))
    return model


def unbuilt():
    return keras.Sequential([L.Dense(3, name="h1")])


def nan_weights():
    model = mlp()
    kernel = np.asarray(model.get_layer("h2").kernel.numpy())
    kernel[1, 2] = np.nan
    model.get_layer("h2").kernel.assign(kernel)
    return model


MODELS = {
    "mlp": mlp,
    "no_supported_layers": no_supported_layers,
    "subclassed": subclassed,
    "unbuilt": unbuilt,
    "nan_weights": nan_weights,
}

# (id, model kind or None, call, error, message pattern)
CASES = [
    # --- regularizers: strengths, axes and flags
    ("li_str", None, lambda _: LiRegularizer("0.1"), TypeError, r"`li`.*'0\.1'"),
    ("li_bool", None, lambda _: LiRegularizer(True), TypeError, "`li`"),
    ("li_negative", None, lambda _: LiRegularizer(-0.1), ValueError, r"`li`.*li=-0\.1"),
    ("li_nan", None, lambda _: LiRegularizer(NAN), ValueError, "`li`.*nan"),
    ("li_inf", None, lambda _: LiRegularizer(INF), ValueError, "`li`.*inf"),
    ("li_axis", None, lambda _: LiRegularizer(0.1, axis="last"), TypeError, "`axis`"),
    (
        "li_flag",
        None,
        lambda _: LiRegularizer(0.1, scale_by_group_size="yes"),
        TypeError,
        "`scale_by_group_size`",
    ),
    ("lo_none", None, lambda _: LoRegularizer(None), TypeError, "`lo`.*None"),
    ("lo_negative", None, lambda _: LoRegularizer(-1), ValueError, "`lo`"),
    ("lo_nan", None, lambda _: LoRegularizer(NAN), ValueError, "`lo`"),
    ("lo_axis", None, lambda _: LoRegularizer(0.1, axis=[]), TypeError, "`axis`"),
    ("dn_l1", None, lambda _: DropNeuronRegularizer(l1=-1e-3), ValueError, "`l1`"),
    ("dn_l2", None, lambda _: DropNeuronRegularizer(l2=NAN), ValueError, "`l2`"),
    ("dn_li", None, lambda _: DropNeuronRegularizer(li=[0.1]), TypeError, "`li`"),
    ("dn_li_axis", None, lambda _: DropNeuronRegularizer(li_axis=1.5), TypeError, "`li_axis`"),
    ("dn_lo_axis", None, lambda _: DropNeuronRegularizer(lo_axis=(True,)), TypeError, "`lo_axis`"),
    (
        "dn_flag",
        None,
        lambda _: DropNeuronRegularizer(scale_by_group_size=1),
        TypeError,
        "`scale_by_group_size`",
    ),
    (
        "axis_out_of_range",
        None,
        lambda _: LiRegularizer(0.1, axis=3)(np.ones((2, 2))),
        ValueError,
        "`axis`.*shape",
    ),
    # Axes named twice are refused at once; axes beyond the rank need the weight.
    ("li_axis_twice", None, lambda _: LiRegularizer(0.1, axis=(0, 0)), ValueError, r"`axis`"),
    ("lo_axis_twice", None, lambda _: LoRegularizer(0.1, axis=[-1, -1]), ValueError, "`axis`"),
    (
        "dn_axis_twice",
        None,
        lambda _: DropNeuronRegularizer(li=0.1, li_axis=(1, 1)),
        ValueError,
        "`li_axis`",
    ),
    (
        "li_axis_beyond_rank",
        None,
        lambda _: LiRegularizer(0.1, axis=5)(np.ones((3, 4))),
        ValueError,
        r"`axis`.*rank 2.*axis=5.*shape \(3, 4\)",
    ),
    (
        "li_axis_same_once_resolved",
        None,
        lambda _: LiRegularizer(0.1, axis=(1, -1))(np.ones((3, 4))),
        ValueError,
        r"`axis`.*shape \(3, 4\)",
    ),
    (
        "dn_lo_axis_beyond_rank",
        None,
        lambda _: DropNeuronRegularizer(lo=0.1, lo_axis=-3)(np.ones((3, 4))),
        ValueError,
        r"`lo_axis`.*lo_axis=-3.*shape \(3, 4\)",
    ),
    # --- regularize_model
    (
        "rm_type",
        None,
        lambda _: regularize_model("model.keras", li=0.1),
        TypeError,
        "`model`.*str",
    ),
    (
        "rm_subclassed",
        "subclassed",
        lambda m: regularize_model(m, li=0.1),
        ValueError,
        "subclassed",
    ),
    ("rm_unbuilt", "unbuilt", lambda m: regularize_model(m, li=0.1), ValueError, "not built"),
    (
        "rm_empty",
        "no_supported_layers",
        lambda m: regularize_model(m, li=0.1),
        ValueError,
        "no layer that DropNeuron",
    ),
    (
        "rm_nan_weights",
        "nan_weights",
        lambda m: regularize_model(m, li=0.1),
        ValueError,
        "'h2'.*NaN",
    ),
    ("rm_negative", "mlp", lambda m: regularize_model(m, lo=-0.1), ValueError, "`lo`"),
    ("rm_nan", "mlp", lambda m: regularize_model(m, li=NAN), ValueError, "`li`"),
    ("rm_str", "mlp", lambda m: regularize_model(m, l1="big"), TypeError, "`l1`"),
    (
        "rm_flag",
        "mlp",
        lambda m: regularize_model(m, scale_by_group_size="no"),
        TypeError,
        "`scale_by_group_size`",
    ),
    (
        "rm_unsupported",
        "mlp",
        lambda m: regularize_model(m, layers=["norm"]),
        ValueError,
        "Unsupported layer.*'norm'.*LayerNormalization",
    ),
    (
        "rm_unknown",
        "mlp",
        lambda m: regularize_model(m, layers=["h9"]),
        ValueError,
        "'h9' is not a layer",
    ),
    (
        "rm_layers_str",
        "mlp",
        lambda m: regularize_model(m, layers="h1"),
        TypeError,
        r"`layers`.*pass a list: layers=\['h1'\]",
    ),
    # --- prune_weights
    ("pw_type", None, lambda _: prune_weights(None, 0.1), TypeError, "`model`.*None"),
    ("pw_subclassed", "subclassed", lambda m: prune_weights(m, 0.1), ValueError, "subclassed"),
    ("pw_unbuilt", "unbuilt", lambda m: prune_weights(m, 0.1), ValueError, "not built"),
    (
        "pw_empty",
        "no_supported_layers",
        lambda m: prune_weights(m, 0.1),
        ValueError,
        "no layer that DropNeuron",
    ),
    ("pw_nan_weights", "nan_weights", lambda m: prune_weights(m, 0.1), ValueError, "'h2'.*NaN"),
    ("pw_threshold_nan", "mlp", lambda m: prune_weights(m, NAN), ValueError, "`threshold`"),
    (
        "pw_threshold_negative",
        "mlp",
        lambda m: prune_weights(m, -1),
        ValueError,
        "`threshold`.*-1",
    ),
    ("pw_threshold_bool", "mlp", lambda m: prune_weights(m, True), TypeError, "`threshold`"),
    (
        "pw_mode",
        "mlp",
        lambda m: prune_weights(m, 0.1, mode="filters"),
        ValueError,
        "`mode`.*'filters'",
    ),
    (
        "pw_unsupported",
        "mlp",
        lambda m: prune_weights(m, 0.1, layers=["norm"]),
        ValueError,
        "Unsupported layer.*'norm'",
    ),
    (
        "pw_layers_str",
        "mlp",
        lambda m: prune_weights(m, 0.1, layers="h1"),
        TypeError,
        r"`layers`.*pass a list: layers=\['h1'\]",
    ),
    (
        "pw_mode_type",
        "mlp",
        lambda m: prune_weights(m, 0.1, mode=None),
        TypeError,
        "`mode`.*NoneType",
    ),
    (
        "pw_kills_layer",
        "mlp",
        lambda m: prune_weights(m, 10.0),
        ValueError,
        "every unit of layer 'h1'",
    ),
    (
        "pw_kills_layer_incoming",
        "mlp",
        lambda m: prune_weights(m, 10.0, mode="incoming", layers=["out"]),
        ValueError,
        "every unit of layer 'out'",
    ),
    # --- PruneCallback arguments
    ("pc_threshold_nan", None, lambda _: PruneCallback(NAN), ValueError, "`threshold`"),
    ("pc_threshold_negative", None, lambda _: PruneCallback(-0.5), ValueError, "`threshold`"),
    ("pc_threshold_str", None, lambda _: PruneCallback("0.1"), TypeError, "`threshold`"),
    ("pc_frequency_zero", None, lambda _: PruneCallback(frequency=0), ValueError, "`frequency`"),
    # A value of the wrong type is a TypeError, as everywhere else.
    (
        "pc_frequency_float",
        None,
        lambda _: PruneCallback(frequency=2.5),
        TypeError,
        "`frequency`.*'epoch' or an int >= 1",
    ),
    (
        "pc_frequency_bool",
        None,
        lambda _: PruneCallback(frequency=True),
        TypeError,
        "`frequency`",
    ),
    (
        "pc_frequency_str",
        None,
        lambda _: PruneCallback(frequency="batch"),
        ValueError,
        "`frequency`.*'batch'",
    ),
    ("pc_mode", None, lambda _: PruneCallback(mode=None), TypeError, "`mode`"),
    ("pc_mode_typo", None, lambda _: PruneCallback(mode="nueron"), ValueError, "`mode`"),
    ("pc_layers", None, lambda _: PruneCallback(layers=[1]), TypeError, "`layers`"),
    (
        "pc_layers_str",
        None,
        lambda _: PruneCallback(layers="h1"),
        TypeError,
        r"`layers`.*pass a list: layers=\['h1'\]",
    ),
    ("pc_warmup", None, lambda _: PruneCallback(warmup_epochs=1.5), TypeError, "`warmup_epochs`"),
    (
        "pc_warmup_negative",
        None,
        lambda _: PruneCallback(warmup_epochs=-1),
        ValueError,
        "`warmup_epochs`.*-1",
    ),
    # --- ProximalGroupShrinkage arguments
    (
        "pg_layers_str",
        None,
        lambda _: ProximalGroupShrinkage(li=0.1, layers="h1"),
        TypeError,
        r"`layers`.*pass a list: layers=\['h1'\]",
    ),
    ("pg_layers_int", None, lambda _: ProximalGroupShrinkage(layers=3), TypeError, "`layers`"),
    ("pg_li", None, lambda _: ProximalGroupShrinkage(li="0.1"), TypeError, "`li`.*str"),
    # --- choose_threshold: every argument checked before anything is tried
    (
        "ct_thresholds_float",
        "mlp",
        lambda m: choose_threshold(m, X, Y, thresholds=0.1),
        TypeError,
        "`thresholds`.*list of floats.*thresholds=0.1 of type float",
    ),
    (
        "ct_thresholds_str",
        "mlp",
        lambda m: choose_threshold(m, X, Y, thresholds="0.1"),
        TypeError,
        "`thresholds`",
    ),
    (
        "ct_threshold_item",
        "mlp",
        lambda m: choose_threshold(m, X, Y, thresholds=[0.1, -1]),
        ValueError,
        r"`thresholds\[1\]`.*-1",
    ),
    (
        "ct_mode",
        "mlp",
        lambda m: choose_threshold(m, X, Y, thresholds=[0.1], mode="nueron"),
        ValueError,
        "`mode`.*'nueron'",
    ),
    (
        "ct_nan_weights",
        "nan_weights",
        lambda m: choose_threshold(m, X, Y, thresholds=[0.1]),
        ValueError,
        "'h2'.*NaN",
    ),
    (
        "ct_score",
        "mlp",
        lambda m: choose_threshold(m, X, Y, score="mse"),
        TypeError,
        "`score`",
    ),
    ("ct_batch", "mlp", lambda m: choose_threshold(m, X, Y, batch_size=0), ValueError, "`batch"),
    ("ct_model", None, lambda _: choose_threshold(None, X, Y), TypeError, "`model`.*None"),
    (
        "ct_empty",
        "no_supported_layers",
        lambda m: choose_threshold(m, X, Y),
        ValueError,
        "no layer that DropNeuron",
    ),
    # --- slim_model and export
    (
        "sm_threshold_str",
        "mlp",
        lambda m: slim_model(m, threshold="0.1"),
        TypeError,
        "`threshold`.*'0.1' of type str",
    ),
    (
        "es_none",
        None,
        lambda _: export_saved_model(None, "unused"),
        TypeError,
        "`model`: expected a keras.Model.*None",
    ),
    (
        "et_layer",
        None,
        lambda _: export_tflite(L.Dense(2), "unused.tflite"),
        TypeError,
        "`model`: expected a keras.Model.*Dense",
    ),
    # --- sparsity_report
    ("sr_type", None, lambda _: sparsity_report([1, 2]), TypeError, "`model`.*list"),
    ("sr_subclassed", "subclassed", sparsity_report, ValueError, "subclassed"),
    ("sr_unbuilt", "unbuilt", sparsity_report, ValueError, "not built"),
    ("sr_nan_weights", "nan_weights", sparsity_report, ValueError, "'h2'.*NaN"),
    ("sr_threshold", "mlp", lambda m: sparsity_report(m, threshold=-1), ValueError, "`threshold`"),
    (
        "sr_threshold_nan",
        "mlp",
        lambda m: sparsity_report(m, threshold=NAN),
        ValueError,
        "`threshold`",
    ),
]


def _state(model):
    """Everything a failed call must leave alone: weights and layer configs."""
    weights = [np.array(w, copy=True) for w in model.get_weights()]
    configs = [layer.get_config() for layer in model.layers]
    return weights, configs


def _assert_same_state(before, after):
    for a, b in zip(before[0], after[0], strict=True):
        np.testing.assert_array_equal(a, b)  # NaN positions compare equal
    assert before[1] == after[1]


@pytest.mark.parametrize(
    "kind,call,error,match", [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_bad_input_raises_clear_error_and_changes_nothing(kind, call, error, match):
    model = MODELS[kind]() if kind else None
    before = _state(model) if model is not None and model.built else None
    with pytest.raises(error, match=match):
        call(model)
    if before is not None:
        _assert_same_state(before, _state(model))


def _fit(model, callbacks):
    model.compile("sgd", "mse")
    x = np.random.randn(32, 6).astype("float32")
    y = np.random.randn(32, *model.outputs[0].shape[1:]).astype("float32")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=callbacks)


@pytest.mark.parametrize(
    "kind,kwargs,error,match",
    [
        ("no_supported_layers", {}, ValueError, "no layer that DropNeuron"),
        # Managed layers are checked; by default only the regularized h1 is managed.
        ("nan_weights", {"layers": ["h1", "h2"]}, ValueError, "'h2'.*NaN"),
        ("mlp", {"layers": ["norm"]}, ValueError, "Unsupported layer.*'norm'"),
        ("mlp", {"layers": ["h9"]}, ValueError, "'h9' is not a layer"),
    ],
    ids=["empty", "nan_weights", "unsupported", "unknown"],
)
def test_prune_callback_refuses_bad_models_before_training(kind, kwargs, error, match):
    model = MODELS[kind]()
    before = _state(model)
    with pytest.raises(error, match=match):
        _fit(model, [PruneCallback(0.01, **kwargs)])
    _assert_same_state(before, _state(model))  # not a single step was taken


def test_prune_callback_refuses_subclassed_models():
    model = subclassed()
    model.compile("sgd", "mse")
    before = _state(model)
    x = np.random.randn(8, 6).astype("float32")
    with pytest.raises(ValueError, match="subclassed"):
        model.fit(x, x[:, :3], epochs=1, verbose=0, callbacks=[PruneCallback(0.01)])
    _assert_same_state(before, _state(model))


class Snapshot(keras.callbacks.Callback):
    """Keeps the weights as they are when each epoch ends, before pruning."""

    def on_epoch_end(self, epoch, logs=None):
        self.weights = [np.array(w, copy=True) for w in self.model.get_weights()]


@pytest.mark.parametrize("mode", ["weight", "incoming", "neuron"])
def test_prune_callback_refuses_a_threshold_that_kills_a_layer(mode):
    model = mlp()
    snapshot = Snapshot()
    with pytest.raises(ValueError, match="every unit of layer 'h1'"):
        _fit(model, [snapshot, PruneCallback(10.0, mode=mode)])
    # The refused event changed nothing: the model is as training left it, no zeros.
    for a, b in zip(snapshot.weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.all(model.get_layer("h1").kernel.numpy() != 0)
    assert np.all(np.isfinite(model.predict(np.ones((2, 6)), verbose=0)))


def test_layer_that_is_already_dead_is_left_alone():
    # Only a step that kills the last units of a layer is refused, not a layer that
    # has none left: prune_weights prunes the others and leaves it as it is.
    model = mlp()
    model.get_layer("h2").kernel.assign(np.zeros((5, 4), "float32"))
    before = {n: np.asarray(model.get_layer(n).kernel.numpy()) for n in ("h1", "h2", "out")}
    counts = prune_weights(model, 0.1)
    for name, w in before.items():
        np.testing.assert_array_equal(model.get_layer(name).kernel.numpy(), w * (abs(w) >= 0.1))
    assert counts["zeros"] == sum(int(np.sum(abs(w) < 0.1)) for w in before.values())
    assert counts["total"] == 6 * 5 + 5 * 4 + 4 * 1


def test_report_of_a_model_without_supported_layers_is_empty():
    model = no_supported_layers()
    report = sparsity_report(model)
    assert report.rows == []
    assert report.totals == {
        "units": 0,
        "units_alive": 0,
        "units_after_slim": 0,
        "nonzero_weights": 0,
        "total_weights": 0,
        "compression": 1.0,
        # Nothing to remove: the slim model keeps every parameter.
        "params": model.count_params(),
        "params_after_slim": model.count_params(),
    }
    assert "Total" in str(report)


def test_report_of_an_all_zero_layer_has_infinite_compression():
    model = mlp()
    model.get_layer("h2").kernel.assign(np.zeros((5, 4), "float32"))
    row = {r["layer"]: r for r in sparsity_report(model).to_list()}["h2"]
    assert row["nonzero_weights"] == 0 and math.isinf(row["compression"])


# The same bad value gets the same exception, in the same words, from every public
# function that takes such an argument; only the argument's name differs.
NON_NEGATIVE_FLOATS = [
    ("threshold", lambda m, v: prune_weights(m, v)),
    ("threshold", lambda m, v: slim_model(m, threshold=v)),
    ("threshold", lambda m, v: sparsity_report(m, threshold=v)),
    ("threshold", lambda m, v: PruneCallback(threshold=v)),
    ("thresholds[0]", lambda m, v: choose_threshold(m, X, Y, thresholds=[v])),
    ("tolerance", lambda m, v: choose_threshold(m, X, Y, tolerance=v)),
    ("li", lambda m, v: LiRegularizer(v)),
    ("lo", lambda m, v: LoRegularizer(v)),
    ("li", lambda m, v: ProximalGroupShrinkage(li=v)),
    ("lo", lambda m, v: ProximalGroupShrinkage(lo=v)),
    *[(n, lambda m, v, n=n: DropNeuronRegularizer(**{n: v})) for n in ("li", "lo", "l1", "l2")],
    *[(n, lambda m, v, n=n: regularize_model(m, **{n: v})) for n in ("li", "lo", "l1", "l2")],
]
BOOLS = [
    ("scale_by_group_size", lambda m, v: LiRegularizer(scale_by_group_size=v)),
    ("scale_by_group_size", lambda m, v: LoRegularizer(scale_by_group_size=v)),
    ("scale_by_group_size", lambda m, v: DropNeuronRegularizer(scale_by_group_size=v)),
    ("scale_by_group_size", lambda m, v: regularize_model(m, scale_by_group_size=v)),
    *[
        (n, lambda m, v, n=n: slim_model(m, **{n: v}))
        for n in ("keep_regularizers", "drop_inputs", "approximate", "return_report")
    ],
]
MODES = [
    ("mode", lambda m, v: prune_weights(m, 0.1, mode=v)),
    ("mode", lambda m, v: PruneCallback(mode=v)),
    ("mode", lambda m, v: choose_threshold(m, X, Y, mode=v)),
]


def _errors(calls, value):
    """`(type, message)` per call, the argument's name replaced by `NAME`."""
    model = mlp()
    errors = set()
    for name, call in calls:
        with pytest.raises((TypeError, ValueError)) as info:
            call(model, value)
        message = str(info.value).replace(f"`{name}`", "`NAME`").replace(f"{name}=", "NAME=")
        errors.add((info.type, message))
    return errors


@pytest.mark.parametrize(
    "value,error",
    [
        ("0.1", TypeError),
        (True, TypeError),
        (None, TypeError),
        ([0.1], TypeError),
        (-1, ValueError),
        (-1e-9, ValueError),
        (NAN, ValueError),
        (INF, ValueError),
        (np.float32(-1), ValueError),
    ],
)
def test_same_bad_float_same_error_everywhere(value, error):
    ((kind, message),) = _errors(NON_NEGATIVE_FLOATS, value)
    assert kind is error
    if error is TypeError:
        expected = f"Invalid type for argument `NAME`: expected a float. Received: NAME={value!r}"
        assert message == f"{expected} of type {type(value).__name__}"
    else:
        expected = "Invalid value for argument `NAME`: expected a finite float >= 0."
        assert message == f"{expected} Received: NAME={value!r}"


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
def test_same_bad_flag_same_error_everywhere(value):
    ((kind, message),) = _errors(BOOLS, value)
    assert kind is TypeError
    assert message == (
        "Invalid type for argument `NAME`: expected a bool. "
        f"Received: NAME={value!r} of type {type(value).__name__}"
    )


@pytest.mark.parametrize(
    "value,error", [("nueron", ValueError), (None, TypeError), (1, TypeError)]
)
def test_same_bad_mode_same_error_everywhere(value, error):
    ((kind, message),) = _errors(MODES, value)
    assert kind is error
    assert "one of ('weight', 'incoming', 'outgoing', 'neuron', 'scale')" in message


@pytest.mark.parametrize(
    "option,check,convert,kwargs,text,value",
    [
        ("--threshold", check_non_negative_float, float, {}, "-1", -1.0),
        ("--threshold", check_non_negative_float, float, {}, "nan", NAN),
        ("--threshold", check_non_negative_float, float, {}, "abc", "abc"),
        ("--seeds", check_int, int, {"minimum": 1}, "0", 0),
        ("--seeds", check_int, int, {"minimum": 1}, "1.5", "1.5"),
    ],
)
def test_command_line_gets_the_same_words(option, check, convert, kwargs, text, value):
    # What argparse prints after "argument --threshold: " is what the API says.
    with pytest.raises((TypeError, ValueError)) as api:
        if isinstance(value, str):
            check(option, value, **kwargs)
        else:
            check(option, convert(value), **kwargs)
    expected = str(api.value).split(": ", 1)[1]
    if isinstance(value, str):  # not even a number: a float or an int was expected
        expected = expected.replace("a finite float >= 0", "a float").replace(
            "an int >= 1", "an int"
        )
    parse = argparse_type(option, check, convert=convert, **kwargs)
    with pytest.raises(argparse.ArgumentTypeError) as cli:
        parse(text)
    assert str(cli.value) == expected
    assert argparse_type(option, check, convert=convert, **kwargs)("2") == 2


def test_choose_threshold_still_stops_where_a_layer_would_vanish():
    # Only that refusal ends the search quietly; it is its own ValueError subclass.
    from keras_dropneuron.pruning import UnitsWouldVanishError

    model = mlp()
    with pytest.raises(UnitsWouldVanishError):
        prune_weights(keras.models.clone_model(model), 10.0)
    chosen, scores = choose_threshold(model, X, Y, tolerance=1e9, thresholds=[1e-6, 10.0])
    assert chosen == 1e-6 and list(scores) == [0.0, 1e-6]


def test_an_array_where_a_pair_belongs_is_described_by_its_shape():
    """`prune_to_budget(model, x, ...)`: the error names the array's shape, not its values."""
    from keras_dropneuron import prune_to_budget

    model = MODELS["mlp"]()
    x = np.arange(2000 * 6, dtype="float32").reshape(2000, 6)
    with pytest.raises(TypeError, match=r"train_data=<ndarray of shape \(2000, 6\)") as caught:
        prune_to_budget(model, x, (x, x[:, 0]), target_macs=0.5)
    assert len(str(caught.value)) < 300
    assert "1999" not in str(caught.value)
