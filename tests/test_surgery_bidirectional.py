"""Bidirectional around LSTM, GRU and SimpleRNN: both directions lose their dead units, exactly.

Every test compares the slim model's outputs with the source model's on random data and
counts the slim model's parameters against a formula of the units that should stay.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

from keras_dropneuron import DropNeuronRegularizer, slim_model, sparsity_report
from keras_dropneuron.surgery.graph import build_graph
from keras_dropneuron.surgery.plan import make_plan

RNG = np.random.default_rng(0)
CLASSES = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple": keras.layers.SimpleRNN}
GATES = {"lstm": 4, "gru": 3, "simple": 1}
CANDIDATE = {"lstm": 2, "gru": 2, "simple": 0}
# By cell, so that `keras.layers.RNN(keras.layers.LSTMCell(n))` is found too.
KIND = {
    keras.layers.LSTMCell: "lstm",
    keras.layers.GRUCell: "gru",
    keras.layers.SimpleRNNCell: "simple",
}


def _bidirectional(kind, units, merge_mode="concat", name="bi", **kwargs):
    return keras.layers.Bidirectional(
        CLASSES[kind](units, **kwargs), merge_mode=merge_mode, name=name
    )


def _randomize(layer, rng=RNG):
    for weight in layer.weights:
        weight.assign(rng.standard_normal(weight.shape).astype("float32") * 0.5)


def _edit(variable, fn):
    value = np.array(to_numpy(variable))
    fn(value)
    variable.assign(value)


def _kill_incoming(rnn, unit):
    """The candidate block of `unit` is zero (kernels and bias): it outputs 0 forever."""
    column = CANDIDATE[KIND[type(rnn.cell)]] * rnn.cell.units + unit
    for variable in (rnn.cell.kernel, rnn.cell.recurrent_kernel, rnn.cell.bias):
        _edit(variable, lambda v: v.__setitem__((..., column), 0))


def _kill_outgoing(rnn, unit):
    """No gate reads `unit` back: its recurrent kernel row is zero."""
    _edit(rnn.cell.recurrent_kernel, lambda v: v.__setitem__(unit, 0))


def _rnn_params(kind, inputs, units):
    """Parameters of one LSTM/GRU/SimpleRNN (GRU with reset_after: two bias rows)."""
    gates = GATES[kind] * units
    bias = 2 * gates if kind == "gru" else gates
    return (inputs + units) * gates + bias


def _assert_exact(model, slim, x, slim_x=None):
    expected = to_numpy(model(x))
    got = to_numpy(slim(x if slim_x is None else slim_x))
    np.testing.assert_allclose(got, expected, atol=1e-5 * (1 + np.abs(expected).max()))


def _data(shape=(3, 7, 5)):
    return RNG.standard_normal(shape).astype("float32")


def _head_reads(model, channels, name="out"):
    """The head's kernel rows of `channels` are zero: no consumer reads them."""
    _edit(model.get_layer(name).kernel, lambda v: v.__setitem__(list(channels), 0))


def _model(kind, merge_mode, return_sequences, units=6):
    inputs = keras.Input((7, 5))
    bi = _bidirectional(kind, units, merge_mode, return_sequences=return_sequences)
    hidden = bi(inputs)
    if merge_mode is None:
        hidden = keras.layers.Concatenate(name="cat")(hidden)
    if return_sequences:
        hidden = keras.layers.GlobalAveragePooling1D()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    _randomize(bi)
    return model, bi


# Every kind, every merge mode, both return_sequences.
CASES = [
    ("lstm", "concat", False),
    ("gru", "concat", True),
    ("simple", "concat", False),
    ("lstm", "sum", True),
    ("gru", "ave", False),
    ("simple", "mul", True),
    ("lstm", "mul", False),
    ("gru", None, True),
    ("simple", None, False),
]


@pytest.mark.parametrize(("kind", "merge_mode", "return_sequences"), CASES)
def test_dead_units_of_both_directions_go(kind, merge_mode, return_sequences, tmp_path):
    model, bi = _model(kind, merge_mode, return_sequences)
    forward, backward = bi.forward_layer, bi.backward_layer
    # Removable per direction: forward 0, 1, 4; backward 1, 3, 4.
    _kill_incoming(forward, 1)
    _kill_incoming(backward, 1)
    _kill_incoming(forward, 0)
    _kill_incoming(backward, 3)
    # Unit 4 of both directions: no gate reads it back and the head ignores it.
    _kill_outgoing(forward, 4)
    _kill_outgoing(backward, 4)
    # The head ignores unit 0 too, but the backward gates read it back: it stays.
    concatenated = merge_mode in ("concat", None)
    _head_reads(model, [0, 4, 6, 10] if concatenated else [0, 4])
    if merge_mode == "concat":
        # Each direction loses its own three; both keep as many units.
        kept = {"forward_layer": [2, 3, 5], "backward_layer": [0, 2, 5]}
    else:
        # Unit j goes only when it goes from both directions (sum, ave, mul: channel j
        # holds both; None: the two outputs keep one width): 1 and 4.
        kept = dict.fromkeys(("forward_layer", "backward_layer"), [0, 2, 3, 5])
    units = len(kept["forward_layer"])
    slim = slim_model(model)
    new = slim.get_layer("bi")
    for side, units_kept in kept.items():
        source, sliced = getattr(bi, side).cell, getattr(new, side).cell
        assert sliced.units == units
        columns = _columns(kind, units_kept)
        np.testing.assert_array_equal(
            to_numpy(sliced.recurrent_kernel),
            to_numpy(source.recurrent_kernel)[np.ix_(units_kept, columns)],
        )
        np.testing.assert_array_equal(to_numpy(sliced.kernel), to_numpy(source.kernel)[:, columns])
    channels = 2 * units if concatenated else units
    expected = 2 * _rnn_params(kind, 5, units) + channels * 2 + 2
    assert slim.count_params() == expected
    assert sparsity_report(model).totals["params_after_slim"] == expected
    x = _data()
    _assert_exact(model, slim, x)
    slim.save(tmp_path / "slim.keras")
    _assert_exact(slim, keras.saving.load_model(tmp_path / "slim.keras"), x)


def _columns(kind, units, width=6):
    """The gate columns of `units` in a kernel of `width` units."""
    return (np.arange(GATES[kind])[:, None] * width + np.asarray(units)).reshape(-1)


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_dead_units_on_one_side_only(merge_mode):
    model, bi = _model("lstm", merge_mode, False)
    for unit in (0, 2):
        _kill_incoming(bi.forward_layer, unit)
    slim = slim_model(model)
    new = slim.get_layer("bi")
    # concat: both directions keep as many units (Keras gives the wrapper twice the forward
    # layer's output shape), so the forward side keeps its dead units to match the backward
    # side; sum: channel j also carries backward unit j, which is alive.
    assert new.forward_layer.units == new.backward_layer.units == 6
    assert slim.count_params() == model.count_params()
    _assert_exact(model, slim, _data())


@pytest.mark.parametrize("merge_mode", ["concat", "sum"])
def test_round_to_rounds_the_units_of_each_direction(merge_mode):
    model, bi = _model("gru", merge_mode, False)
    for units, rnn in (([0, 1, 2], bi.forward_layer), ([3, 4, 5], bi.backward_layer)):
        for unit in units:
            _kill_incoming(rnn, unit)
    if merge_mode == "sum":  # units 3-5 of the forward direction die too
        for unit in (3, 4, 5):
            _kill_incoming(bi.forward_layer, unit)
    # Three units per direction could go; a multiple of 4 keeps four (one dead each).
    assert slim_model(model).get_layer("bi").forward_layer.units == 3
    slim = slim_model(model, round_to=4)
    new = slim.get_layer("bi")
    assert new.forward_layer.units == new.backward_layer.units == 4
    channels = 8 if merge_mode == "concat" else 4
    assert slim.count_params() == 2 * _rnn_params("gru", 5, 4) + channels * 2 + 2
    _assert_exact(model, slim, _data())


@pytest.mark.parametrize("merge_mode", ["concat", "ave"])
def test_stacked_bidirectional_layers(merge_mode):
    inputs = keras.Input((7, 5))
    first = _bidirectional("lstm", 6, merge_mode, name="first", return_sequences=True)
    second = _bidirectional("gru", 4, merge_mode, name="second")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(second(first(inputs))))
    _randomize(first)
    _randomize(second)
    concatenated = merge_mode == "concat"
    # First: unit 5 dead in both directions (and so channels 5 and 11, or 5).
    _kill_incoming(first.forward_layer, 5)
    _kill_incoming(first.backward_layer, 5)
    # First: unit 2 is not fed back, and the second layer reads neither of its channels.
    _kill_outgoing(first.forward_layer, 2)
    _kill_outgoing(first.backward_layer, 2)
    for rnn in (second.forward_layer, second.backward_layer):
        _edit(rnn.cell.kernel, lambda v: v.__setitem__([2, 8] if concatenated else [2], 0))
    # Second: unit 1 dead in both directions.
    _kill_incoming(second.forward_layer, 1)
    _kill_incoming(second.backward_layer, 1)
    slim = slim_model(model)
    assert slim.get_layer("first").forward_layer.units == 4
    assert slim.get_layer("second").backward_layer.units == 3
    first_out = 8 if concatenated else 4
    second_out = 6 if concatenated else 3
    expected = (
        2 * _rnn_params("lstm", 5, 4) + 2 * _rnn_params("gru", first_out, 3) + second_out * 2 + 2
    )
    assert slim.count_params() == expected
    assert sparsity_report(model).totals["params_after_slim"] == expected
    _assert_exact(model, slim, _data())


def test_directions_of_different_kinds():
    inputs = keras.Input((7, 5))
    backward = keras.layers.GRU(6, go_backwards=True)
    bi = keras.layers.Bidirectional(keras.layers.LSTM(6), backward_layer=backward, name="bi")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(bi(inputs)))
    _randomize(bi)
    for rnn, units in ((bi.forward_layer, [1, 2]), (bi.backward_layer, [2, 4])):
        for unit in units:
            _kill_incoming(rnn, unit)
    slim = slim_model(model)
    new = slim.get_layer("bi")
    assert isinstance(new.backward_layer, keras.layers.GRU) and new.backward_layer.go_backwards
    assert new.forward_layer.units == new.backward_layer.units == 4
    expected = _rnn_params("lstm", 5, 4) + _rnn_params("gru", 5, 4) + 8 * 2 + 2
    assert slim.count_params() == expected
    _assert_exact(model, slim, _data())


def test_unread_input_features_go_only_when_both_directions_ignore_them():
    model, bi = _model("gru", "concat", True)
    # Feature 3: zero rows in both kernels; feature 1: only in the forward kernel.
    for rnn, rows in ((bi.forward_layer, [1, 3]), (bi.backward_layer, [3])):
        _edit(rnn.cell.kernel, lambda v, rows=rows: v.__setitem__(rows, 0))
    slim, report = slim_model(model, drop_inputs=True, return_report=True)
    (kept,) = report.kept_inputs.values()
    np.testing.assert_array_equal(kept, [0, 1, 2, 4])
    assert slim.get_layer("bi").forward_layer.cell.kernel.shape == (4, 3 * 6)
    assert slim.count_params() == 2 * _rnn_params("gru", 4, 6) + 12 * 2 + 2
    x = _data()
    _assert_exact(model, slim, x, x[..., kept])


@pytest.mark.parametrize("merge_mode", ["concat", "sum", None])
def test_return_state_keeps_states_with_their_units(merge_mode):
    inputs = keras.Input((7, 5))
    bi = _bidirectional("lstm", 6, merge_mode, return_state=True)
    outputs = bi(inputs)
    model = keras.Model(
        inputs, keras.layers.Dense(2, name="out")(keras.layers.Concatenate()(list(outputs)))
    )
    _randomize(bi)
    for rnn in (bi.forward_layer, bi.backward_layer):
        _kill_incoming(rnn, 3)
    _kill_incoming(bi.forward_layer, 0)  # one side only: stays
    slim = slim_model(model)
    new = slim.get_layer("bi")
    assert new.forward_layer.units == new.backward_layer.units == 5
    # Output channels (one or two directions) and four states of 5 units each.
    channels = (10 if merge_mode in ("concat", None) else 5) + 4 * 5
    assert slim.count_params() == 2 * _rnn_params("lstm", 5, 5) + channels * 2 + 2
    _assert_exact(model, slim, _data())


def test_masked_sequences_stay_exact():
    inputs = keras.Input((7,), dtype="int32")
    embedded = keras.layers.Embedding(10, 5, mask_zero=True)(inputs)
    # Both layers take the padding mask.
    first = _bidirectional("lstm", 6, "sum", name="first", return_sequences=True)
    second = _bidirectional("gru", 4, "concat", name="second")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(second(first(embedded))))
    for layer, unit in ((first, 2), (second, 0)):
        _randomize(layer)
        for rnn in (layer.forward_layer, layer.backward_layer):
            _kill_incoming(rnn, unit)
    slim = slim_model(model)
    assert slim.get_layer("first").forward_layer.units == 5
    assert slim.get_layer("second").backward_layer.units == 3
    x = RNG.integers(1, 10, (4, 7))
    x[:, 5:] = 0  # padding
    x[0, 2:] = 0
    _assert_exact(model, slim, x)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_slim_sequence_models_save_and_reload(suffix, tmp_path):
    inputs = keras.Input((7, 5))
    bi = _bidirectional("gru", 6, "concat", return_sequences=True)
    simple = keras.layers.SimpleRNN(6, return_sequences=True, name="simple")
    lstm = keras.layers.LSTM(6, name="lstm")
    mha = keras.layers.MultiHeadAttention(3, 4, name="mha")
    # Attention keeps its input channels (it mixes them), so it comes first.
    x = lstm(simple(bi(mha(inputs, inputs))))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    for layer in (bi, simple, lstm, mha):
        _randomize(layer)
    for rnn in (bi.forward_layer, bi.backward_layer, simple, lstm):
        _kill_incoming(rnn, 1)
    _edit(mha.output_dense.kernel, lambda v: v.__setitem__(2, 0))  # head 2 adds nothing
    slim = slim_model(model)
    assert slim.get_layer("bi").forward_layer.units == 5
    assert slim.get_layer("simple").units == slim.get_layer("lstm").units == 5
    assert slim.get_layer("mha").num_heads == 2
    slim.save(tmp_path / f"slim{suffix}")
    reloaded = keras.saving.load_model(tmp_path / f"slim{suffix}")
    assert reloaded.count_params() == slim.count_params()
    data = _data()
    _assert_exact(model, reloaded, data)


def test_keep_regularizers_false_reaches_the_wrapped_layers():
    inputs = keras.Input((7, 5))
    regularizer = DropNeuronRegularizer(li=0.1, lo=0.1)
    bi = _bidirectional("lstm", 6, kernel_regularizer=regularizer)
    model = keras.Model(inputs, keras.layers.Dense(2)(bi(inputs)))
    _randomize(bi)
    for rnn in (bi.forward_layer, bi.backward_layer):
        _kill_incoming(rnn, 0)
    kept = slim_model(model).get_layer("bi")
    assert kept.forward_layer.cell.kernel_regularizer is not None
    plain = slim_model(model, keep_regularizers=False).get_layer("bi")
    assert plain.forward_layer.cell.kernel_regularizer is None
    assert plain.backward_layer.cell.kernel_regularizer is None
    # The source model keeps its own.
    assert bi.forward_layer.cell.kernel_regularizer is not None


def test_mixed_precision_bidirectional_model():
    keras.config.set_dtype_policy("mixed_float16")
    model, bi = _model("gru", "concat", True)
    for rnn in (bi.forward_layer, bi.backward_layer):
        _kill_incoming(rnn, 4)
    slim, report = slim_model(model, return_report=True)
    new = slim.get_layer("bi")
    assert new.forward_layer.units == 5
    assert new.dtype_policy.name == new.forward_layer.dtype_policy.name == "mixed_float16"
    assert new.forward_layer.cell.kernel.dtype == "float32"
    x = _data()
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-2)


# ------------------------------------------------------------ kept whole, with a reason


def _reasons(model):
    plan = make_plan(build_graph(model), threshold=0.0, drop_inputs=False, approximate=False)
    return {call.name: reason for call, reason in zip(plan.graph.calls, plan.reasons, strict=True)}


@keras.saving.register_keras_serializable(package="test_surgery_bidirectional")
class _OwnCallLSTM(keras.layers.LSTM):
    def call(self, sequences, initial_state=None, mask=None, training=False):
        return super().call(sequences, initial_state, mask, training)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("stateful", "stateful: the state carries over between calls"),
        ("initial_state", "called with an initial state"),
        ("bi_stateful", "stateful: the state carries over between calls"),
        ("bi_initial_state", "called with an initial state"),
        ("bi_rnn", "Bidirectional around RNN: no rule for the wrapped layer"),
        ("bi_own_call", "Bidirectional around _OwnCallLSTM, which overrides call()"),
    ],
)
def test_unsupported_sequence_configurations_name_their_reason(case, reason):
    batch = 3 if "stateful" in case else None
    inputs = keras.Input((7, 5), batch_size=batch)
    model_inputs = [inputs]
    kwargs = {}
    if "initial_state" in case:
        states = [keras.Input((6,)) for _ in range(4 if case.startswith("bi") else 2)]
        model_inputs += states
        kwargs["initial_state"] = states
    stateful = "stateful" in case
    if case == "bi_rnn":
        layer = keras.layers.Bidirectional(keras.layers.RNN(keras.layers.LSTMCell(6)), name="seq")
    elif case == "bi_own_call":
        layer = keras.layers.Bidirectional(_OwnCallLSTM(6), name="seq")
    elif case.startswith("bi"):
        layer = keras.layers.Bidirectional(keras.layers.LSTM(6, stateful=stateful), name="seq")
    else:
        layer = keras.layers.LSTM(6, stateful=stateful, name="seq")
    hidden = layer(inputs, **kwargs)
    model = keras.Model(model_inputs, keras.layers.Dense(2, name="out")(hidden))
    _randomize(layer)
    # Unit 1 is dead: without the reason it would go.
    for rnn in [layer.forward_layer, layer.backward_layer] if case.startswith("bi") else [layer]:
        _kill_incoming(rnn, 1)
    assert _reasons(model)["seq"] == reason
    # Kept whole: every weight and unit stays, and the slim model is exact.
    slim = slim_model(model)
    assert slim.count_params() == model.count_params()
    data = [RNG.standard_normal((3,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    _assert_exact(model, slim, data if len(data) > 1 else data[0])


def test_a_masking_layer_is_kept_whole_and_the_layer_after_it_slims():
    inputs = keras.Input((7, 5))
    masked = keras.layers.Masking(0.0, name="masking")(inputs)
    bi = _bidirectional("lstm", 6, "concat")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(bi(masked)))
    _randomize(bi)
    for rnn in (bi.forward_layer, bi.backward_layer):
        _kill_incoming(rnn, 3)
    reasons = _reasons(model)
    assert reasons["masking"] == "layer type without a rule" and reasons["bi"] is None
    slim = slim_model(model)
    assert slim.get_layer("bi").forward_layer.units == 5
    x = _data()
    x[0, 4:] = 0  # masked steps
    x[1, :2] = 0
    _assert_exact(model, slim, x)


def test_a_supported_bidirectional_has_no_reason():
    model, _ = _model("lstm", "concat", False)
    assert _reasons(model)["bi"] is None
