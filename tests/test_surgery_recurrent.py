"""LSTM, GRU and SimpleRNN: dead hidden units and unread input features go, exactly."""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_dropneuron import slim_model, sparsity_report

RNG = np.random.default_rng(0)
GATES = {"lstm": 4, "gru": 3, "simple": 1}
CANDIDATE = {"lstm": 2, "gru": 2, "simple": 0}


def _rnn(kind, units, **kwargs):
    cls = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple": keras.layers.SimpleRNN}
    return cls[kind](units, name="rnn", **kwargs)


def _randomize(layer):
    for weight in layer.weights:
        weight.assign(RNG.standard_normal(weight.shape).astype("float32") * 0.5)


def _kill_incoming(layer, kind, unit):
    """Zero the candidate block of `unit` (kernels and bias): it outputs 0 forever."""
    cell, width, block = layer.cell, layer.units, CANDIDATE[kind]
    column = block * width + unit
    for variable in (cell.kernel, cell.recurrent_kernel):
        value = variable.numpy()
        value[:, column] = 0
        variable.assign(value)
    bias = cell.bias.numpy()
    bias[..., column] = 0
    cell.bias.assign(bias)


def _kill_outgoing(layer, unit):
    """Nothing reads `unit` back: its recurrent kernel row is zero."""
    value = layer.cell.recurrent_kernel.numpy()
    value[unit] = 0
    layer.cell.recurrent_kernel.assign(value)


def _model(kind, return_sequences, **kwargs):
    inputs = keras.Input((7, 5))
    rnn = _rnn(kind, 6, return_sequences=return_sequences, **kwargs)
    hidden = rnn(inputs)
    if return_sequences:
        hidden = keras.layers.GlobalAveragePooling1D()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))
    _randomize(rnn)
    return model, rnn


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple"])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_dead_units_and_features_go(kind, return_sequences, tmp_path):
    model, rnn = _model(kind, return_sequences)
    _kill_incoming(rnn, kind, 1)  # SimpleRNN: a zero bias too, so tanh(0) = 0
    # Unit 4: not fed back and not read by the head.
    _kill_outgoing(rnn, 4)
    head = model.get_layer("out").kernel.numpy()
    head[4] = 0
    model.get_layer("out").kernel.assign(head)
    # Input feature 3 is never read.
    kernel = rnn.cell.kernel.numpy()
    kernel[3] = 0
    rnn.cell.kernel.assign(kernel)
    slim, report = slim_model(model, drop_inputs=True, return_report=True)
    assert slim.get_layer("rnn").units == 4
    np.testing.assert_array_equal(next(iter(report.kept_inputs.values())), [0, 1, 2, 4])
    g = GATES[kind]
    assert slim.get_layer("rnn").cell.kernel.shape == (4, g * 4)
    x = RNG.standard_normal((3, 7, 5)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x[..., [0, 1, 2, 4]])), to_numpy(model(x)), atol=1e-5)
    assert sparsity_report(model).totals["params_after_slim"] == slim_model(model).count_params()
    slim.save(tmp_path / "slim.keras")
    np.testing.assert_allclose(
        to_numpy(keras.saving.load_model(tmp_path / "slim.keras")(x[..., [0, 1, 2, 4]])),
        to_numpy(slim(x[..., [0, 1, 2, 4]])),
        atol=1e-6,
    )


def test_a_unit_fed_back_stays_even_if_no_consumer_reads_it():
    model, rnn = _model("lstm", False)
    head = model.get_layer("out").kernel.numpy()
    head[2] = 0  # the head ignores unit 2, but every gate still reads it back
    model.get_layer("out").kernel.assign(head)
    assert slim_model(model).get_layer("rnn").units == 6


def test_a_unit_with_only_its_input_gate_zero_stays():
    # Only the input gate of unit 0 is zero: its cell still integrates the candidate.
    model, rnn = _model("lstm", False)
    kernel = rnn.cell.kernel.numpy()
    kernel[:, 0] = 0
    rnn.cell.kernel.assign(kernel)
    assert slim_model(model).get_layer("rnn").units == 6


def test_stacked_recurrent_layers_with_return_state():
    inputs = keras.Input((7, 5))
    first = keras.layers.LSTM(6, return_sequences=True, name="first")
    sequence = first(inputs)
    second = keras.layers.GRU(4, return_state=True, name="second")
    last, state = second(sequence)
    joined = keras.layers.Concatenate()([last, state])
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(joined))
    _randomize(first)
    _randomize(second)
    _kill_incoming(first, "lstm", 5)
    _kill_incoming(second, "gru", 0)
    slim = slim_model(model)
    assert slim.get_layer("first").units == 5 and slim.get_layer("second").units == 3
    x = RNG.standard_normal((3, 7, 5)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


def test_stateful_and_initial_state_are_kept_whole():
    inputs = keras.Input((7, 5), batch_size=3)
    rnn = keras.layers.LSTM(6, stateful=True, name="rnn")
    model = keras.Model(inputs, keras.layers.Dense(2)(rnn(inputs)))
    _randomize(rnn)
    _kill_incoming(rnn, "lstm", 1)
    assert slim_model(model).get_layer("rnn").units == 6

    inputs, h, c = keras.Input((7, 5)), keras.Input((6,)), keras.Input((6,))
    rnn = keras.layers.LSTM(6, name="rnn")
    model = keras.Model([inputs, h, c], keras.layers.Dense(2)(rnn(inputs, initial_state=[h, c])))
    _randomize(rnn)
    _kill_incoming(rnn, "lstm", 1)
    assert slim_model(model).get_layer("rnn").units == 6


def test_masked_sequences_stay_exact():
    inputs = keras.Input((7,), dtype="int32")
    embedded = keras.layers.Embedding(10, 5, mask_zero=True)(inputs)
    rnn = keras.layers.GRU(6, name="rnn")
    model = keras.Model(inputs, keras.layers.Dense(2)(rnn(embedded)))
    _randomize(rnn)
    _kill_incoming(rnn, "gru", 3)
    slim = slim_model(model)
    assert slim.get_layer("rnn").units == 5
    x = RNG.integers(0, 10, (4, 7))
    x[:, 5:] = 0  # padding
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


# ------------------------------------------------------------ property test


@st.composite
def sequence_models(draw):
    """Stacks of recurrent, Bidirectional and attention layers with random dead units and heads."""
    kinds = ["lstm", "gru", "simple", "mha", "dense", "bi-lstm", "bi-gru", "bi-simple"]
    blocks = draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3))
    return blocks, draw(st.integers(0, 2**16)), draw(st.booleans())


def _kill_some(rnn, kind, rng):
    """Random units lose their candidate path; some others are no longer fed back."""
    for unit in rng.choice(6, int(rng.integers(0, 4)), replace=False):
        _kill_incoming(rnn, kind, int(unit))
    for unit in rng.choice(6, int(rng.integers(0, 2)), replace=False):
        _kill_outgoing(rnn, int(unit))


def _sequence_model(blocks, rng, last_sequence):
    inputs = keras.Input((5, 6))
    x = inputs
    for i, block in enumerate(blocks):
        if block == "mha":
            mha = keras.layers.MultiHeadAttention(3, 4, name=f"b{i}")
            x = mha(x, x)
            _randomize(mha)
            dense = getattr(mha, rng.choice(["value_dense", "output_dense"]))
            kernel = dense.kernel.numpy()
            head = int(rng.integers(3))
            if dense is mha.value_dense:
                kernel[:, head] = 0
                bias = dense.bias.numpy()
                bias[head] = 0
                dense.bias.assign(bias)
            else:
                kernel[head] = 0
            dense.kernel.assign(kernel)
        elif block == "dense":
            x = keras.layers.Dense(7, activation="relu", name=f"b{i}")(x)
        elif block.startswith("bi-"):
            merge_mode = str(rng.choice(["concat", "sum", "ave", "mul"]))
            bi = keras.layers.Bidirectional(
                _rnn(block[3:], 6, return_sequences=True), merge_mode=merge_mode, name=f"b{i}"
            )
            x = bi(x)
            _randomize(bi)
            for rnn in (bi.forward_layer, bi.backward_layer):
                _kill_some(rnn, block[3:], rng)
        else:
            rnn = _rnn(block, 6, return_sequences=True)
            rnn.name = f"b{i}"
            x = rnn(x)
            _randomize(rnn)
            _kill_some(rnn, block, rng)
    if not last_sequence:
        x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


@settings(max_examples=12, deadline=None)
@given(spec=sequence_models())
def test_random_sequence_models_slim_exactly(spec):
    blocks, seed, last_sequence = spec
    rng = np.random.default_rng(seed)
    model = _sequence_model(blocks, rng, last_sequence)
    slim, report = slim_model(model, return_report=True)
    assert report.max_deviation <= report.tolerance
    x = rng.standard_normal((3, 5, 6)).astype("float32")
    expected = to_numpy(model(x))
    np.testing.assert_allclose(
        to_numpy(slim(x)), expected, atol=1e-5 * (1 + np.abs(expected).max())
    )
    assert sparsity_report(model).totals["params_after_slim"] == slim.count_params()


def test_mixed_precision_recurrent_model():
    keras.config.set_dtype_policy("mixed_float16")
    model, rnn = _model("lstm", True)
    _kill_incoming(rnn, "lstm", 2)
    slim, report = slim_model(model, return_report=True)
    assert slim.get_layer("rnn").units == 5
    assert slim.get_layer("rnn").dtype_policy.name == "mixed_float16"
    assert report.tolerance == pytest.approx(np.sqrt(np.finfo(np.float16).eps))
    x = RNG.standard_normal((3, 7, 5)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-2)


def test_masked_ids_of_open_length_still_let_recurrent_units_go():
    # A padding mask and integer ids have no channel axis: with `Input((None,))` their
    # last axis is unknown, which must not keep the Embedding and the GRUs whole.
    inputs = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(30, 8, mask_zero=True, name="embedding")(inputs)
    h = keras.layers.Bidirectional(keras.layers.GRU(6, return_sequences=True), name="bi")(h)
    h = keras.layers.GRU(6, name="gru")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    cell = model.get_layer("gru").cell
    columns = [b * 6 + 2 for b in range(3)]  # unit 2 of every gate block
    for variable in (cell.kernel, cell.recurrent_kernel, cell.bias):
        value = to_numpy(variable).copy()
        value[..., columns] = 0
        variable.assign(value)
    slim, report = slim_model(model, return_report=True)
    assert slim.get_layer("gru").units == 5 and not report.kept_whole
    x = np.random.default_rng(0).integers(1, 30, size=(4, 9)).astype("int32")
    x[:, 6:] = 0  # padding
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)
    x_short = x[:, :7]  # another length: the slim model keeps the open length
    np.testing.assert_allclose(to_numpy(slim(x_short)), to_numpy(model(x_short)), atol=1e-5)
