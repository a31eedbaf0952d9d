"""Penalties, pruning and the report inside a Bidirectional wrapper, against numpy.

`Bidirectional(LSTM | GRU | SimpleRNN)` has the kernels of both directions,
`forward_layer.cell.kernel`, `forward_layer.cell.recurrent_kernel`,
`backward_layer.cell.kernel`, `backward_layer.cell.recurrent_kernel`, each
with its direction's gate blocks: hidden unit `j` owns column `b * units + j`
of every block `b`. The report's units are the forward units, then the
backward ones.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from test_recurrent_penalties import li_numpy, lo_numpy, unit_columns

from keras_dropneuron import (
    DropNeuronRegularizer,
    ProximalGroupShrinkage,
    PruneCallback,
    prune_weights,
    regularize_model,
    slim_model,
    sparsity_report,
)
from keras_dropneuron.layer_rules import supported_layer_names, weight_layouts

L = keras.layers
SIDES = ("forward_layer", "backward_layer")


def kernels(layer):
    """Per direction: (kernel, recurrent kernel) as float64 numpy."""
    return [
        tuple(
            np.asarray(to_numpy(w), np.float64)
            for w in (getattr(layer, side).cell.kernel, getattr(layer, side).cell.recurrent_kernel)
        )
        for side in SIDES
    ]


def two_wrappers():
    """Bidirectional(LSTM(4)) concat -> Bidirectional(GRU(3), sum) -> Dense(1)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 3))
    x = L.Bidirectional(L.LSTM(4, return_sequences=True), name="bl")(inputs)
    x = L.Bidirectional(L.GRU(3), merge_mode="sum", name="bg")(x)
    return keras.Model(inputs, L.Dense(1, name="out")(x))


def expected_loss(model, li, lo):
    total = 0.0
    for name, gates in (("bl", 4), ("bg", 3)):
        for pair in kernels(model.get_layer(name)):
            total += sum(li * li_numpy(w, gates) + lo * lo_numpy(w) for w in pair)
    w = np.asarray(to_numpy(model.get_layer("out").kernel), np.float64)
    return total + li * li_numpy(w, 1) + lo * lo_numpy(w)


def test_bidirectional_has_both_directions_layouts():
    model = two_wrappers()
    layouts = weight_layouts(model.get_layer("bl"))
    assert [(lay.attribute, lay.regularizer_argument, lay.gates) for lay in layouts] == [
        ("forward_layer.cell.kernel", "layer.config.kernel_regularizer", 4),
        ("forward_layer.cell.recurrent_kernel", "layer.config.recurrent_regularizer", 4),
        ("backward_layer.cell.kernel", "backward_layer.config.kernel_regularizer", 4),
        ("backward_layer.cell.recurrent_kernel", "backward_layer.config.recurrent_regularizer", 4),
    ]
    assert [lay.gates for lay in weight_layouts(model.get_layer("bg"))] == [3, 3, 3, 3]
    assert "Bidirectional" in supported_layer_names()
    # Around a layer without a recurrent rule the wrapper has no weights to penalize.
    assert weight_layouts(L.Bidirectional(L.RNN(L.LSTMCell(2)))) == ()


def test_regularize_model_reaches_both_directions_and_round_trips(tmp_path):
    model = two_wrappers()
    regularized = regularize_model(model, li=0.03, lo=0.02)
    assert all(w.regularizer is None for w in model.weights)  # the original is untouched
    for name, gates in (("bl", 4), ("bg", 3)):
        layer = regularized.get_layer(name)
        for side in SIDES:
            cell = getattr(layer, side).cell
            for variable in (cell.kernel, cell.recurrent_kernel):
                assert isinstance(variable.regularizer, DropNeuronRegularizer)
                assert variable.regularizer.gates == gates
        config = layer.get_config()
        for key in ("layer", "backward_layer"):
            assert config[key]["config"]["recurrent_regularizer"]["config"]["gates"] == gates
    total = float(np.sum(to_numpy(regularized.losses)))
    np.testing.assert_allclose(total, expected_loss(model, 0.03, 0.02), rtol=1e-5)
    regularized.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert reloaded.get_layer("bg").backward_layer.cell.recurrent_kernel.regularizer.gates == 3
    np.testing.assert_allclose(
        float(np.sum(to_numpy(reloaded.losses))), expected_loss(model, 0.03, 0.02), rtol=1e-5
    )
    # By name, the wrapper alone.
    only = regularize_model(model, li=0.03, layers=["bg"])
    assert only.get_layer("bl").forward_layer.cell.kernel.regularizer is None
    assert only.get_layer("bg").forward_layer.cell.kernel.regularizer.gates == 3


def test_prune_weights_groups_each_directions_units_across_gate_blocks():
    model = two_wrappers()
    layer = model.get_layer("bl")
    forward, backward = layer.forward_layer.cell, layer.backward_layer.cell
    rng = np.random.default_rng(3)
    kernel_f = rng.standard_normal((3, 16)).astype("float32")
    kernel_f[:, [b * 4 + 1 for b in range(4)]] = 1e-3  # forward unit 1: small in every block
    kernel_b = rng.standard_normal((3, 16)).astype("float32")
    kernel_b[:, 4 + 2] = 1e-3  # backward unit 2: small in its forget block only
    forward.kernel.assign(kernel_f)
    backward.kernel.assign(kernel_b)
    prune_weights(model, threshold=0.05, mode="incoming", layers=["bl"])
    for cell, kernel in ((forward, kernel_f), (backward, kernel_b)):
        norms = np.linalg.norm(unit_columns(kernel, 4), axis=1)
        pruned = unit_columns(to_numpy(cell.kernel), 4)
        np.testing.assert_array_equal(np.all(pruned == 0, axis=1), norms < 0.05)
    assert np.all(to_numpy(forward.kernel)[:, [1, 5, 9, 13]] == 0)
    assert np.any(to_numpy(backward.kernel)[:, 6] != 0)  # the forget block stays
    # Killing every unit of one direction's kernel is refused, naming the weight.
    backward.kernel.assign(kernel_b * 1e-4)
    with pytest.raises(ValueError, match=r"'bl'.*backward_layer\.cell\.kernel"):
        prune_weights(model, threshold=0.05, mode="incoming", layers=["bl"])


def test_sparsity_report_counts_bidirectional_units_like_numpy():
    model = two_wrappers()
    bl, bg, out = model.get_layer("bl"), model.get_layer("bg"), model.get_layer("out")
    fk, fr = (
        to_numpy(w) for w in (bl.forward_layer.cell.kernel, bl.forward_layer.cell.recurrent_kernel)
    )
    bk, br = (
        to_numpy(w)
        for w in (bl.backward_layer.cell.kernel, bl.backward_layer.cell.recurrent_kernel)
    )
    fk[:, [b * 4 + 0 for b in range(4)]] = 0  # forward unit 0: no column anywhere, dead
    fr[:, [b * 4 + 0 for b in range(4)]] = 0
    fk[2] = 0  # feature 2: the forward direction does not read it (the backward one does)
    br[3] = 0  # backward unit 3: not read back by its gates...
    bl.forward_layer.cell.kernel.assign(fk)
    bl.forward_layer.cell.recurrent_kernel.assign(fr)
    bl.backward_layer.cell.recurrent_kernel.assign(br)
    gk_f, gk_b = to_numpy(bg.forward_layer.cell.kernel), to_numpy(bg.backward_layer.cell.kernel)
    gk_f[[4 + 3, 1]] = 0  # ...nor by the GRUs (channel 4 + 3); channel 1 still read back
    gk_b[[4 + 3, 1]] = 0
    bg.forward_layer.cell.kernel.assign(gk_f)
    bg.backward_layer.cell.kernel.assign(gk_b)
    # The GRUs (sum): unit 2 of both directions dead; Dense reads channel 1 of neither.
    for side in SIDES:
        cell = getattr(bg, side).cell
        for variable in (cell.kernel, cell.recurrent_kernel):
            value = to_numpy(variable)
            value[:, [b * 3 + 2 for b in range(3)]] = 0
            variable.assign(value)
        cell.bias.assign(np.zeros(cell.bias.shape, "float32"))
    dense = to_numpy(out.kernel)
    dense[1] = 0
    out.kernel.assign(dense)

    rows = {row["layer"]: row for row in sparsity_report(model).to_list()}
    slim = slim_model(model)

    # bl: units forward 0-3, backward 0-3 (= output channels, concat).
    incoming = np.concatenate(
        [
            np.any(unit_columns(k, 4) != 0, axis=1) | np.any(unit_columns(r, 4) != 0, axis=1)
            for k, r in ((fk, fr), (bk, br))
        ]
    )
    read = np.any(gk_f != 0, axis=1) | np.any(gk_b != 0, axis=1)  # channel read by a GRU
    read |= np.concatenate([np.any(fr != 0, axis=1), np.any(br != 0, axis=1)])
    row = rows["bl"]
    assert (row["type"], row["units"], row["inputs"]) == ("Bidirectional", 8, 3)
    assert row["inputs_alive"] == int((np.any(fk != 0, axis=1) | np.any(bk != 0, axis=1)).sum())
    assert row["inputs_alive"] == 3
    assert row["units_alive_incoming"] == int(incoming.sum()) == 7
    assert row["units_alive_outgoing"] == int(read.sum()) == 7
    assert row["units_alive"] == int((incoming & read).sum()) == 6
    assert row["nonzero_weights"] == sum(int(np.count_nonzero(w)) for w in (fk, fr, bk, br))
    assert row["total_weights"] == 2 * (3 * 16 + 4 * 16)
    slim_bl = slim.get_layer("bl")
    assert row["units_after_slim"] == slim_bl.forward_layer.units + slim_bl.backward_layer.units

    # bg (sum): unit j of both directions is read when Dense reads channel j.
    gk = kernels(bg)
    incoming = np.concatenate(
        [
            np.any(unit_columns(k, 3) != 0, axis=1) | np.any(unit_columns(r, 3) != 0, axis=1)
            for k, r in gk
        ]
    )
    channel = np.any(dense != 0, axis=1)
    read = np.concatenate([channel, channel]) | np.concatenate(
        [np.any(r != 0, axis=1) for _, r in gk]
    )
    row = rows["bg"]
    assert (row["units"], row["inputs"]) == (6, 8)
    assert row["inputs_alive"] == int(
        (np.any(gk[0][0] != 0, axis=1) | np.any(gk[1][0] != 0, axis=1)).sum()
    )
    assert row["inputs_alive"] == 6
    assert row["units_alive_incoming"] == int(incoming.sum()) == 4
    assert row["units_alive_outgoing"] == int(read.sum())
    assert row["units_alive"] == int((incoming & read).sum())
    slim_bg = slim.get_layer("bg")
    assert slim_bg.forward_layer.units == 2  # unit 2 went from both directions
    assert row["units_after_slim"] == slim_bg.forward_layer.units + slim_bg.backward_layer.units
    x = np.random.default_rng(4).standard_normal((8, 5, 3)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


def slim_units_numpy(layer, dense_kernel, gates):
    """The units per direction the surgeon keeps, from the weights (Dense reads the output).

    A unit is dead when its candidate block (LSTM 2, GRU 2) is zero in both
    kernels and the bias (its output is 0 at every step); it must stay when it
    is live and its recurrent row is not zero. A dead channel folds into the
    Dense; a channel the Dense does not read can go. `concat`: each direction
    on its own, both keeping as many; `sum`: channel `j` is both units `j`.
    """
    dead, stay = [], []
    for side in SIDES:
        cell = getattr(layer, side).cell
        k, r = (to_numpy(w) for w in (cell.kernel, cell.recurrent_kernel))
        bias = to_numpy(cell.bias).reshape(-1, gates, k.shape[1] // gates)
        candidate = [w.reshape(w.shape[0], gates, -1)[:, 2] for w in (k, r)]
        gone = np.all(candidate[0] == 0, axis=0) & np.all(candidate[1] == 0, axis=0)
        gone &= np.all(bias[:, 2] == 0, axis=0)
        dead.append(gone)
        stay.append(np.any(r != 0, axis=1) & ~gone)
    read = np.any(dense_kernel != 0, axis=1)
    if layer.merge_mode == "concat":
        width = len(read) // 2
        kept = [stay[i] | (~dead[i] & read[i * width : (i + 1) * width]) for i in range(2)]
        return max(int(kept[0].sum()), int(kept[1].sum()))
    return int((stay[0] | stay[1] | (~(dead[0] & dead[1]) & read)).sum())


@pytest.mark.parametrize(
    "kind, merge_mode, gates", [("lstm", "concat", 4), ("gru", "sum", 3)], ids=["lstm", "gru"]
)
def test_training_kills_whole_units_per_direction_and_slim_removes_them(kind, merge_mode, gates):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 3))
    rnn = {"lstm": L.LSTM, "gru": L.GRU}[kind](6)
    hidden = L.Bidirectional(rnn, merge_mode=merge_mode, name="bi")(inputs)
    model = keras.Model(inputs, L.Dense(1, name="out")(hidden))
    model = regularize_model(model, li=0.02, lo=0.02)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 5, 3)).astype("float32")
    y = (
        x[:, -1, :1] + x[:, 0, 1:2]
    )  # the last step for the forward direction, the first for the backward one
    model.compile(keras.optimizers.Adam(0.03), "mse")
    callback = PruneCallback(0.1, mode="neuron")
    history = model.fit(x, y, epochs=6, batch_size=16, verbose=0, callbacks=[callback])
    layer = model.get_layer("bi")
    alive = []
    for k, r in kernels(layer):
        # Per unit and gate block: is the block's column zero in both kernels? A unit
        # dies in every block at once, never in one block alone.
        for w in (k, r):
            blocks = np.all(w.reshape(w.shape[0], gates, 6) == 0, axis=0)  # (gates, units)
            assert np.all(blocks == blocks[:1])
        alive.append(
            np.any(unit_columns(k, gates) != 0, axis=1)
            | np.any(unit_columns(r, gates) != 0, axis=1)
        )
    alive_f, alive_b = alive
    assert history.history["alive_units"][-1] == alive_f.sum() + alive_b.sum() + 1  # + Dense
    assert (~alive_f).sum() + (~alive_b).sum() >= 2
    slim = slim_model(model)
    units = slim.get_layer("bi").forward_layer.units
    assert units == slim.get_layer("bi").backward_layer.units
    assert units == slim_units_numpy(layer, to_numpy(model.get_layer("out").kernel), gates) < 6
    row = sparsity_report(model).to_list()[0]
    assert (row["units"], row["units_after_slim"]) == (12, 2 * units)
    np.testing.assert_allclose(to_numpy(slim(x[:32])), to_numpy(model(x[:32])), atol=1e-5)


def test_proximal_shrinkage_zeroes_whole_units_of_each_direction():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 3))
    layer = L.Bidirectional(L.GRU(4), name="bi")
    model = keras.Model(inputs, L.Dense(1)(layer(inputs)))
    small = {"forward_layer": [1, 3], "backward_layer": [0]}  # units scaled down
    for side, units in small.items():
        scale = np.ones(4, "float32")
        scale[units] = 0.01
        scale = np.tile(scale, 3)
        scale[4 + 2] = 0.1  # unit 2 small in its reset block only: its group is not
        cell = getattr(layer, side).cell
        for variable in (cell.kernel, cell.recurrent_kernel):
            variable.assign(to_numpy(variable) * scale)
    # A small learning rate: the gradient cannot lift a small unit over the shrink step.
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x = np.random.default_rng(2).standard_normal((64, 5, 3)).astype("float32")
    shrink = ProximalGroupShrinkage(li=5.0)
    model.fit(x, x[:, 0, :1], epochs=2, batch_size=16, verbose=0, callbacks=[shrink])
    for side, units in small.items():
        cell = getattr(layer, side).cell
        for weight in (to_numpy(cell.kernel), to_numpy(cell.recurrent_kernel)):
            groups = unit_columns(weight, 3)
            # The small units went in every gate block at once; the others are whole.
            np.testing.assert_array_equal(np.all(groups == 0, axis=1), np.isin(range(4), units))
            assert np.all(groups[~np.isin(range(4), units)] != 0)
