"""Penalties and pruning of recurrent units and attention heads, against numpy formulas.

A recurrent kernel `(rows, g * units)` holds `g` gate blocks (LSTM 4, GRU 3,
SimpleRNN 1): hidden unit `j` owns column `b * units + j` of every block `b`.
An attention head `h` owns the query/key/value kernel slices `[:, h, :]` and
the output kernel slice `[h]`.
"""

import keras
import numpy as np
import pytest
from backend_utils import float64_mode, to_numpy, value_and_grad

from keras_dropneuron import (
    DropNeuronRegularizer,
    HeadRegularizer,
    LiRegularizer,
    LoRegularizer,
    ProximalGroupShrinkage,
    PruneCallback,
    prune_weights,
    regularize_model,
    slim_model,
    sparsity_report,
)
from keras_dropneuron.layer_rules import weight_layouts
from keras_dropneuron.proximal import _proximal_step

L = keras.layers
RNG = np.random.default_rng(0)
GATES = {"lstm": 4, "gru": 3, "simple": 1}
RNN = {"lstm": L.LSTM, "gru": L.GRU, "simple": L.SimpleRNN}


def unit_columns(w, gates):
    """`w (rows, gates * units)` as `(units, rows * gates)`: each unit's columns in every block."""
    units = w.shape[1] // gates
    return np.stack([w[:, [b * units + j for b in range(gates)]].ravel() for j in range(units)])


def li_numpy(w, gates):
    return sum(np.linalg.norm(group) for group in unit_columns(w, gates))


def lo_numpy(w):
    return sum(np.linalg.norm(row) for row in w)


def grad_numpy(w, gates, li, lo):
    """li * w / ||unit group|| + lo * w / ||row||, 0 in dead groups."""
    column_norms = np.array([np.linalg.norm(g) for g in unit_columns(w, gates)])
    per_column = np.tile(column_norms, gates)  # column b * units + j -> norm of unit j
    row_norms = np.linalg.norm(w, axis=1, keepdims=True)
    grad = np.zeros_like(w)
    np.divide(li * w, per_column[None, :], out=grad, where=per_column[None, :] > 0)
    extra = np.zeros_like(w)
    np.divide(lo * w, row_norms, out=extra, where=row_norms > 0)
    return grad + extra


# Kernel and recurrent kernel shapes of each family with 5 units and 3 input features.
SHAPES = [
    (kind, shape, GATES[kind])
    for kind in GATES
    for shape in ((3, GATES[kind] * 5), (5, GATES[kind] * 5))
]


@pytest.mark.parametrize(("kind", "shape", "gates"), SHAPES)
def test_gated_groups_value_and_gradient_match_numpy(kind, shape, gates):
    w = RNG.standard_normal(shape)
    units = shape[1] // gates
    w[:, [b * units + 1 for b in range(gates)]] = 0.0  # unit 1 dead in every block
    w[0] = 0.0  # a dead row
    reg = DropNeuronRegularizer(li=0.3, lo=0.2, l2=0.1, gates=gates)
    loss, grad = value_and_grad(lambda v: 1.5 * reg(v), w)
    expected = 0.3 * li_numpy(w, gates) + 0.2 * lo_numpy(w) + 0.1 * np.sum(w**2)
    np.testing.assert_allclose(loss, 1.5 * expected, rtol=1e-12)
    np.testing.assert_allclose(grad, 1.5 * (grad_numpy(w, gates, 0.3, 0.2) + 0.2 * w), rtol=1e-12)
    with float64_mode():
        li, lo = LiRegularizer(0.3, gates=gates)(w), LoRegularizer(0.2, gates=gates)(w)
    np.testing.assert_allclose(to_numpy(li), 0.3 * li_numpy(w, gates), rtol=1e-12)
    np.testing.assert_allclose(to_numpy(lo), 0.2 * lo_numpy(w), rtol=1e-12)


def test_gates_group_differs_from_plain_columns():
    # The LSTM group of unit j is 4 columns, not one: the penalties differ.
    w = RNG.standard_normal((3, 8)).astype("float32")
    gated = float(to_numpy(LiRegularizer(1.0, gates=4)(w)))
    plain = float(to_numpy(LiRegularizer(1.0)(w)))
    np.testing.assert_allclose(gated, li_numpy(w.astype(np.float64), 4), rtol=1e-5)
    assert gated < plain  # sqrt of sums < sum of sqrts


def test_scale_by_group_size_counts_every_gate_block():
    w = RNG.standard_normal((3, 12))
    with float64_mode():
        value = LiRegularizer(1.0, gates=4, scale_by_group_size=True)(w)
    np.testing.assert_allclose(to_numpy(value), np.sqrt(3 * 4) * li_numpy(w, 4), rtol=1e-12)


@pytest.mark.parametrize(
    "reg",
    [LiRegularizer(0.1, gates=3), LoRegularizer(0.2, gates=4), DropNeuronRegularizer(li=0.1)],
)
def test_gates_config_is_flat_and_round_trips(reg):
    config = reg.get_config()
    assert isinstance(config["gates"], int)
    clone = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert type(clone) is type(reg) and clone.get_config() == config
    w = RNG.standard_normal((4, 12)).astype("float32")
    np.testing.assert_allclose(to_numpy(clone(w)), to_numpy(reg(w)), rtol=1e-6)


def test_default_gates_keeps_the_old_config_and_value():
    reg = DropNeuronRegularizer(li=0.1, lo=0.2)
    config = reg.get_config()
    assert config.pop("gates") == 1
    assert config == {
        "li": 0.1,
        "lo": 0.2,
        "l1": 0.0,
        "l2": 0.0,
        "li_axis": -1,
        "lo_axis": -2,
        "scale_by_group_size": False,
    }
    # A config saved before `gates` existed still loads.
    assert DropNeuronRegularizer.from_config(config).gates == 1


@pytest.mark.parametrize(
    ("gates", "error", "match"),
    [
        (0, ValueError, "`gates`.*an int >= 1.*gates=0"),
        (-4, ValueError, "`gates`.*gates=-4"),
        (1.5, TypeError, "`gates`.*gates=1.5"),
        (True, TypeError, "`gates`"),
        ("4", TypeError, "`gates`"),
    ],
)
@pytest.mark.parametrize("cls", [LiRegularizer, LoRegularizer, DropNeuronRegularizer])
def test_bad_gates_raise_naming_the_argument(cls, gates, error, match):
    with pytest.raises(error, match=match):
        cls(gates=gates)


@pytest.mark.parametrize("cls", [LiRegularizer, LoRegularizer, DropNeuronRegularizer])
def test_gates_not_dividing_the_last_axis_raise_with_the_shape(cls):
    with pytest.raises(ValueError, match=r"`gates`.*multiple of gates=4.*\(3, 10\)"):
        cls(gates=4)(np.ones((3, 10), "float32"))


# ---------------------------------------------------------------- heads


def head_numpy(w, axis):
    return sum(np.linalg.norm(np.take(w, h, axis=axis)) for h in range(w.shape[axis]))


def head_grad_numpy(w, axis, strength):
    norms = np.sqrt(np.sum(w**2, axis=tuple(a for a in range(w.ndim) if a != axis), keepdims=True))
    grad = np.zeros_like(w)
    np.divide(strength * w, norms, out=grad, where=norms > 0)
    return grad


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((16, 4, 8), 1), ((16, 4, 5), 1), ((4, 5, 16), 0), ((4, 5, 3, 2), 0)],
)
def test_head_groups_value_and_gradient_match_numpy(shape, axis):
    w = RNG.standard_normal(shape)
    dead = [slice(None)] * len(shape)
    dead[axis] = 2
    w[tuple(dead)] = 0.0  # head 2 dead
    reg = HeadRegularizer(0.4, num_heads=4, key_dim=8, value_dim=5, l2=0.1)
    assert reg.head_axis(shape) == axis
    loss, grad = value_and_grad(reg, w)
    np.testing.assert_allclose(loss, 0.4 * head_numpy(w, axis) + 0.1 * np.sum(w**2))
    np.testing.assert_allclose(grad, head_grad_numpy(w, axis, 0.4) + 0.2 * w, rtol=1e-12)
    l1 = HeadRegularizer(0.0, num_heads=4, key_dim=8, value_dim=5, l1=0.3)
    w32 = w.astype("float32")
    np.testing.assert_allclose(to_numpy(l1(w32)), 0.3 * np.abs(w32).sum(), rtol=1e-5)


def test_head_axis_refuses_shapes_it_cannot_orient():
    reg = HeadRegularizer(0.1, num_heads=4, key_dim=4)
    # (dim=4, heads=4, key_dim=4) is also (heads=4, value_dim=4, out=4).
    with pytest.raises(ValueError, match=r"\(4, 4, 4\): it fits both"):
        reg(np.ones((4, 4, 4), "float32"))
    with pytest.raises(ValueError, match=r"\(3, 5, 7\): it fits neither.*nor"):
        reg(np.ones((3, 5, 7), "float32"))
    # With 8 heads of 8 on 64 channels every kernel is clear.
    reg = HeadRegularizer(0.1, num_heads=8, key_dim=8)
    assert reg.head_axis((64, 8, 8)) == 1 and reg.head_axis((8, 8, 64)) == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"heads": -1.0}, ValueError, "`heads`"),
        ({"num_heads": 0}, ValueError, "`num_heads`"),
        ({"key_dim": 2.0}, TypeError, "`key_dim`"),
        ({"value_dim": 0}, ValueError, "`value_dim`"),
    ],
)
def test_bad_head_arguments_raise_naming_them(kwargs, error, match):
    with pytest.raises(error, match=match):
        HeadRegularizer(**{"num_heads": 4, "key_dim": 8, **kwargs})
    with pytest.raises(TypeError, match="num_heads"):
        HeadRegularizer(0.1, key_dim=8)


# ---------------------------------------------------------------- regularize_model


def sequence_model(value_dim=5):
    # Keras 3.15 on JAX cannot call an attention layer whose value_dim differs from key_dim.
    inputs = keras.Input((5, 6))
    x = L.LSTM(7, return_sequences=True, name="lstm")(inputs)
    x = L.GRU(6, return_sequences=True, name="gru")(x)
    x = L.MultiHeadAttention(3, 4, value_dim=value_dim, name="mha")(x, x)
    x = L.SimpleRNN(4, name="simple")(x)
    return keras.Model(inputs, L.Dense(2, name="out")(x))


def expected_loss(model, li, lo, heads):
    total = 0.0
    for name, gates in (("lstm", 4), ("gru", 3), ("simple", 1)):
        cell = model.get_layer(name).cell
        for w in (cell.kernel.numpy(), cell.recurrent_kernel.numpy()):
            w = np.asarray(w, np.float64)
            total += li * li_numpy(w, gates) + lo * lo_numpy(w)
    mha = model.get_layer("mha")
    for dense, axis in (("query_dense", 1), ("key_dense", 1), ("value_dense", 1)):
        total += heads * head_numpy(np.asarray(getattr(mha, dense).kernel.numpy(), "f8"), axis)
    total += heads * head_numpy(np.asarray(mha.output_dense.kernel.numpy(), "f8"), 0)
    w = np.asarray(model.get_layer("out").kernel.numpy(), np.float64)
    return total + li * li_numpy(w, 1) + lo * lo_numpy(w)


def test_regularize_model_puts_gated_and_head_penalties_on(tmp_path):
    model = sequence_model()
    regularized = regularize_model(model, li=0.03, lo=0.02, heads=0.05)
    for name, gates in (("lstm", 4), ("gru", 3), ("simple", 1)):
        cell = regularized.get_layer(name).cell
        for variable in (cell.kernel, cell.recurrent_kernel):
            assert variable.regularizer.get_config()["gates"] == gates
    head_reg = regularized.get_layer("mha").query_dense.kernel.regularizer
    assert isinstance(head_reg, HeadRegularizer)
    assert (head_reg.heads, head_reg.num_heads, head_reg.key_dim, head_reg.value_dim) == (
        0.05,
        3,
        4,
        5,
    )
    total = float(np.sum(to_numpy(regularized.losses)))
    np.testing.assert_allclose(total, expected_loss(model, 0.03, 0.02, 0.05), rtol=1e-5)
    # heads defaults to li.
    default = regularize_model(model, li=0.03, lo=0.02)
    np.testing.assert_allclose(
        float(np.sum(to_numpy(default.losses))), expected_loss(model, 0.03, 0.02, 0.03), rtol=1e-5
    )
    regularized.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(reloaded.get_layer("mha").output_dense.kernel.regularizer, HeadRegularizer)
    assert reloaded.get_layer("lstm").cell.recurrent_kernel.regularizer.gates == 4
    np.testing.assert_allclose(to_numpy(reloaded.losses), to_numpy(regularized.losses), rtol=1e-6)


def test_regularize_model_refuses_an_attention_layer_it_cannot_orient():
    inputs = keras.Input((5, 4))
    outputs = L.MultiHeadAttention(4, 4, name="square")(inputs, inputs)
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match=r"\(4, 4, 4\)"):
        regularize_model(model, li=0.1)
    with pytest.raises(ValueError, match="`heads`"):
        regularize_model(model, li=0.1, heads=-1.0)
    # heads=0.0 penalises nothing there: the layer is left as it is, the rest regularized.
    dense = L.Dense(3, name="ff")(outputs)
    regularized = regularize_model(keras.Model(inputs, dense), li=0.1, heads=0.0)
    assert regularized.get_layer("square").get_config()["kernel_regularizer"] is None
    assert regularized.get_layer("ff").kernel_regularizer.li == 0.1


# ---------------------------------------------------------------- pruning and the report


def test_prune_weights_groups_unit_columns_across_gate_blocks():
    inputs = keras.Input((5, 3))
    rnn = L.LSTM(4, name="rnn")
    model = keras.Model(inputs, L.Dense(1)(rnn(inputs)))
    kernel = RNG.standard_normal((3, 16)).astype("float32")
    kernel[:, [b * 4 + 2 for b in range(4)]] = 1e-3  # unit 2: small in every block
    kernel[:, 4 + 1] = 1e-3  # unit 1: small in its forget block only
    kernel[1] = 1e-3  # feature 1: a small row
    rnn.cell.kernel.assign(kernel)
    norms = np.linalg.norm(unit_columns(kernel, 4), axis=1)
    prune_weights(model, threshold=0.05, mode="incoming", layers=["rnn"])
    pruned = rnn.cell.kernel.numpy()
    for unit in range(4):
        columns = pruned[:, [b * 4 + unit for b in range(4)]]
        assert np.all(columns == 0) == (norms[unit] < 0.05)
    assert np.all(pruned[:, [2, 6, 10, 14]] == 0) and np.any(pruned[:, 5] != 0)
    prune_weights(model, threshold=0.05, mode="outgoing", layers=["rnn"])
    assert np.all(rnn.cell.kernel.numpy()[1] == 0)


def test_prune_weights_head_mode_zeroes_whole_heads():
    inputs = keras.Input((6, 16))
    mha = L.MultiHeadAttention(4, 8, name="mha")
    model = keras.Model(inputs, mha(inputs, inputs))
    for dense in (mha.query_dense, mha.key_dense, mha.value_dense):
        kernel = dense.kernel.numpy()
        kernel[:, 3] *= 1e-4
        dense.kernel.assign(kernel)
    out = mha.output_dense.kernel.numpy()
    out[3] *= 1e-4
    mha.output_dense.kernel.assign(out)
    prune_weights(model, threshold=1e-2, mode="incoming")
    for dense in (mha.query_dense, mha.key_dense, mha.value_dense):
        heads = np.any(dense.kernel.numpy() != 0, axis=(0, 2))
        np.testing.assert_array_equal(heads, [True, True, True, False])
    np.testing.assert_array_equal(
        np.any(mha.output_dense.kernel.numpy() != 0, axis=(1, 2)), [True, True, True, False]
    )
    assert slim_model(model).get_layer("mha").num_heads == 3


def test_prune_refuses_to_kill_every_head_but_not_every_query():
    inputs = keras.Input((6, 16))
    mha = L.MultiHeadAttention(2, 8, name="mha")
    model = keras.Model(inputs, mha(inputs, inputs))
    for dense in (mha.query_dense, mha.key_dense):
        dense.kernel.assign(dense.kernel.numpy() * 1e-4)
    prune_weights(model, threshold=1e-2, mode="incoming")  # uniform attention: allowed
    assert np.all(mha.query_dense.kernel.numpy() == 0)
    mha.output_dense.kernel.assign(mha.output_dense.kernel.numpy() * 1e-4)
    with pytest.raises(ValueError, match="every unit of layer 'mha'"):
        prune_weights(model, threshold=1e-2, mode="incoming")


def test_proximal_step_shrinks_gated_groups_like_numpy():
    (layout, _) = weight_layouts(L.GRU(4))
    w = RNG.standard_normal((3, 12))
    shrunk = to_numpy(_proximal_step(keras.ops.convert_to_tensor(w), layout, 0.5, 0.0, 1.0))
    groups = unit_columns(w, 3)
    scale = np.maximum(0.0, 1 - 0.5 / np.linalg.norm(groups, axis=1))
    np.testing.assert_allclose(shrunk, w * np.tile(scale, 3)[None, :], rtol=1e-6)


def test_sparsity_report_counts_recurrent_units_and_heads_like_numpy():
    model = sequence_model(value_dim=4)
    lstm, mha = model.get_layer("lstm").cell, model.get_layer("mha")
    kernel, recurrent = lstm.kernel.numpy(), lstm.recurrent_kernel.numpy()
    kernel[:, [b * 7 + 3 for b in range(4)]] = 0  # unit 3: no kernel column
    recurrent[:, [b * 7 + 3 for b in range(4)]] = 0  # nor a recurrent one: dead
    kernel[:, [b * 7 + 5 for b in range(4)]] = 0  # unit 5: recurrent columns still alive
    kernel[2] = 0  # feature 2 unread
    recurrent[6] = 0  # unit 6: not read back...
    lstm.kernel.assign(kernel)
    lstm.recurrent_kernel.assign(recurrent)
    gru = model.get_layer("gru").cell
    consumer = gru.kernel.numpy()
    consumer[[4, 6]] = 0  # ...nor by the GRU; unit 4 is still read back by the LSTM's gates
    gru.kernel.assign(consumer)
    value, bias = mha.value_dense.kernel.numpy(), RNG.standard_normal((3, 4)).astype("float32")
    value[:, 0], bias[0] = 0, 0  # head 0: no values
    value[:, 1] = 0  # head 1: its value bias keeps it alive
    mha.value_dense.kernel.assign(value)
    mha.value_dense.bias.assign(bias)
    out = mha.output_dense.kernel.numpy()
    out[2] = 0  # head 2: no output
    mha.output_dense.kernel.assign(out)
    rows = {row["layer"]: row for row in sparsity_report(model).to_list()}
    k, r = lstm.kernel.numpy(), lstm.recurrent_kernel.numpy()
    alive_units = np.any(unit_columns(k, 4) != 0, axis=1) | np.any(unit_columns(r, 4) != 0, axis=1)
    assert rows["lstm"]["units_alive_incoming"] == int(alive_units.sum()) == 6
    assert rows["lstm"]["inputs_alive"] == int(np.any(k != 0, axis=1).sum()) == 5
    read = np.any(gru.kernel.numpy() != 0, axis=1) | np.any(r != 0, axis=1)
    assert rows["lstm"]["units_alive_outgoing"] == int(read.sum()) == 6
    assert rows["lstm"]["units_alive"] == int((read & alive_units).sum()) == 5
    heads_alive = (
        np.any(mha.value_dense.kernel.numpy() != 0, axis=(0, 2))
        | np.any(mha.value_dense.bias.numpy() != 0, axis=1)
    ) & np.any(mha.output_dense.kernel.numpy() != 0, axis=(1, 2))
    assert rows["mha"]["units"] == 3
    assert rows["mha"]["units_alive_incoming"] == int(heads_alive.sum()) == 1
    slim = slim_model(model)
    assert rows["mha"]["units_after_slim"] == slim.get_layer("mha").num_heads == 1
    assert rows["lstm"]["units_after_slim"] == slim.get_layer("lstm").units


# ---------------------------------------------------------------- training


def _train(model, epochs=6):
    rng = np.random.default_rng(1)
    shape = (256, *model.inputs[0].shape[1:])
    x = rng.standard_normal(shape).astype("float32")
    y = x[:, :, :1].mean(axis=1)
    model.compile(keras.optimizers.Adam(0.03), "mse")
    callback = PruneCallback(0.1, mode="neuron")
    history = model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=[callback])
    return x, history


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple"])
def test_training_kills_whole_recurrent_units_and_slim_removes_them(kind):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 3))
    hidden = RNN[kind](6, name="rnn")(inputs)
    model = regularize_model(keras.Model(inputs, L.Dense(1, name="out")(hidden)), li=0.02, lo=0.02)
    x, history = _train(model)
    cell, gates = model.get_layer("rnn").cell, GATES[kind]
    incoming = np.any(unit_columns(cell.kernel.numpy(), gates) != 0, axis=1) | np.any(
        unit_columns(cell.recurrent_kernel.numpy(), gates) != 0, axis=1
    )
    assert history.history["alive_units"][-1] == incoming.sum() + 1  # + the Dense output
    # Whole units died: every column of every gate block of both kernels.
    assert (~incoming).sum() >= 3
    slim = slim_model(model)
    assert slim.get_layer("rnn").units <= incoming.sum()
    assert sparsity_report(model).to_list()[0]["units_after_slim"] == slim.get_layer("rnn").units
    np.testing.assert_allclose(to_numpy(slim(x[:32])), to_numpy(model(x[:32])), atol=1e-5)


def test_training_kills_whole_heads_and_slim_removes_them():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 8))
    attended = L.MultiHeadAttention(4, 4, name="mha")(inputs, inputs)
    pooled = L.GlobalAveragePooling1D()(attended)
    model = regularize_model(keras.Model(inputs, L.Dense(1)(pooled)), li=0.05, lo=0.05)
    x, _ = _train(model)
    mha = model.get_layer("mha")
    output_heads = np.any(mha.output_dense.kernel.numpy() != 0, axis=(1, 2))
    value_heads = np.any(mha.value_dense.kernel.numpy() != 0, axis=(0, 2))
    alive = output_heads & (value_heads | np.any(mha.value_dense.bias.numpy() != 0, axis=1))
    assert 1 <= alive.sum() <= 2
    slim = slim_model(model)
    assert slim.get_layer("mha").num_heads == alive.sum()
    assert sparsity_report(model).to_list()[0]["units_after_slim"] == alive.sum()
    np.testing.assert_allclose(to_numpy(slim(x[:32])), to_numpy(model(x[:32])), atol=1e-5)


def test_proximal_shrinkage_zeroes_whole_gated_units_during_fit():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 3))
    model = keras.Model(inputs, L.Dense(1)(L.GRU(6, name="rnn")(inputs)))
    cell = model.get_layer("rnn").cell
    scale = np.tile([1, 1, 1, 0.1, 0.1, 0.1], 3).astype("float32")  # units 3-5 small
    scale[6 + 0] = 0.1  # unit 0 small in its reset block only: its group is not
    for variable in (cell.kernel, cell.recurrent_kernel):
        variable.assign(variable.numpy() * scale)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    x = np.random.default_rng(2).standard_normal((64, 5, 3)).astype("float32")
    model.fit(
        x,
        x[:, 0, :1],
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[ProximalGroupShrinkage(li=0.5)],
    )
    for weight in (cell.kernel.numpy(), cell.recurrent_kernel.numpy()):
        groups = unit_columns(weight, 3)
        # The small units went in every gate block at once; the others are whole.
        np.testing.assert_array_equal(np.all(groups == 0, axis=1), [0, 0, 0, 1, 1, 1])
        assert np.all(groups[:3] != 0)
