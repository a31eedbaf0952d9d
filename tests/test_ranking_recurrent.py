"""The ranking of recurrent units and attention heads, against numpy and the slim model.

A recurrent unit's group is its column in every gate block of `cell.kernel`
and `cell.recurrent_kernel`, with its bias entries; a head's group is its
slices of the query, key, value and output kernels.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

from keras_dropneuron import BudgetCallback, prune_to_budget, regularize_model, slim_model
from keras_dropneuron.budget.ranking import UnitRanking, ranked_cut
from keras_dropneuron.masking import WeightMasks
from keras_dropneuron.model_utils import select_layers
from keras_dropneuron.surgery.size import slim_size_ratios

L = keras.layers
GATES = {"lstm": 4, "gru": 3}
RNN = {"lstm": L.LSTM, "gru": L.GRU}


def _set_weights(model, seed=0):
    """Every weight drawn from a normal: nothing depends on the initializers."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign((0.5 * rng.standard_normal(variable.shape)).astype("float32"))


def _masks(model):
    masks = WeightMasks(model, select_layers(model))
    masks.install()
    return masks


def _unit_columns(weight, gates, unit):
    """Unit `unit`'s entries of every gate block of `weight (..., gates * units)`."""
    units = weight.shape[-1] // gates
    return weight[..., [b * units + unit for b in range(gates)]]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_scores_are_the_joint_group_norms_over_the_layer_mean(kind):
    inputs = keras.Input((5, 3))
    model = keras.Model(inputs, L.Dense(2, name="out")(RNN[kind](6, name="rnn")(inputs)))
    _set_weights(model)
    cell, gates = model.get_layer("rnn").cell, GATES[kind]
    for variable in (cell.kernel, cell.recurrent_kernel):
        value = variable.numpy()
        value[:, [b * 6 + 4 for b in range(gates)]] = 0  # unit 4: only its bias is left
        variable.assign(value)
    masks = _masks(model)
    ranking = UnitRanking(masks, masks.values())
    kernel, recurrent, bias = (v.numpy() for v in (cell.kernel, cell.recurrent_kernel, cell.bias))
    assert bias.ndim == (2 if kind == "gru" else 1)  # GRU reset_after: two bias rows
    squares = np.array(
        [
            sum(
                np.sum(_unit_columns(w, gates, j).astype(np.float64) ** 2)
                for w in (kernel, recurrent, bias)
            )
            for j in range(6)
        ]
    )
    squares[4] = 0  # a unit without kernel entries loses its bias: dead
    (rnn,) = [ranked for ranked in ranking.layers if ranked.layer.name == "rnn"]
    np.testing.assert_allclose(rnn.scores, np.sqrt(squares), rtol=1e-6)
    live = np.flatnonzero(squares > 0)
    relative = np.sqrt(squares[live]) / np.sqrt(squares[live]).mean()
    expected = [int(u) for _, u in sorted(zip(relative, live, strict=True))][
        :-1
    ]  # the strongest stays
    # "out" is the model's output: never cut.
    assert [unit for _, unit in ranking.order] == expected


def _lstm_model():
    inputs = keras.Input((5, 3))
    hidden = L.LSTM(8, return_sequences=True, name="cut")(inputs)
    hidden = L.LSTM(4, name="second")(hidden)
    return keras.Model(inputs, L.Dense(2, name="out")(hidden))


def _bidirectional_model():
    inputs = keras.Input((5, 3))
    hidden = L.Bidirectional(L.GRU(6), name="cut")(inputs)
    return keras.Model(inputs, L.Dense(2, name="out")(L.Dense(6, name="ff")(hidden)))


def _attention_model():
    inputs = keras.Input((6, 8))
    attended = L.MultiHeadAttention(4, 4, name="cut")(inputs, inputs)
    return keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling1D()(attended)))


def _cut_units(layer):
    """The units (heads) whose kernel slices are all zero, per the layer's kind."""
    if isinstance(layer, L.MultiHeadAttention):
        return np.flatnonzero(np.all(layer.output_dense.kernel.numpy() == 0, axis=(1, 2)))
    cells = [layer.cell] if isinstance(layer, L.RNN) else [layer.forward_layer.cell]
    gates = GATES["gru" if isinstance(cells[0], L.GRUCell) else "lstm"]
    kernel = cells[0].kernel.numpy()
    return np.array(
        [
            j
            for j in range(kernel.shape[-1] // gates)
            if np.all(_unit_columns(kernel, gates, j) == 0)
        ]
    )


def _group_is_zero(layer, units):
    """Whether every entry of the `units`' groups is 0 (biases of recurrent units too)."""
    if isinstance(layer, L.MultiHeadAttention):
        slices = [
            d.kernel.numpy()[:, units]
            for d in (layer.query_dense, layer.key_dense, layer.value_dense)
        ]
        slices.append(layer.output_dense.kernel.numpy()[units])
        return all(np.all(s == 0) for s in slices)
    rnns = [layer] if isinstance(layer, L.RNN) else [layer.forward_layer, layer.backward_layer]
    for rnn in rnns:
        gates = GATES["gru" if isinstance(rnn, L.GRU) else "lstm"]
        for variable in (rnn.cell.kernel, rnn.cell.recurrent_kernel, rnn.cell.bias):
            if any(np.any(_unit_columns(variable.numpy(), gates, j) != 0) for j in units):
                return False
    return True


def _slim_units(layer):
    if isinstance(layer, L.MultiHeadAttention):
        return layer.num_heads
    return layer.units if isinstance(layer, L.RNN) else layer.forward_layer.units


class _CutAtStart(keras.callbacks.Callback):
    """Cuts by ranking when training starts, as a budget event does, and holds the cut."""

    def __init__(self, target):
        super().__init__()
        self.target = target

    def on_train_begin(self, logs=None):
        self.masks = WeightMasks(self.model, select_layers(self.model))
        self.masks.install()
        values = self.masks.values()
        self.ratios = ranked_cut(self.masks, values, values, "macs", self.target)
        self.cut = _cut_units(self.model.get_layer("cut"))

    def on_train_end(self, logs=None):
        self.masks.remove()


@pytest.mark.parametrize("build", [_lstm_model, _bidirectional_model, _attention_model])
def test_ranked_cut_removes_exactly_the_cut_units_and_holds_them_at_zero(build):
    keras.utils.set_random_seed(0)
    model = build()
    _set_weights(model)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    shape = (64, *model.inputs[0].shape[1:])
    x = np.random.default_rng(1).standard_normal(shape).astype("float32")
    cutter = _CutAtStart(target=0.6)
    # Training goes on after the cut: the masks hold the whole group at zero.
    model.fit(
        x, np.ones((64, 2), "float32"), epochs=2, batch_size=16, verbose=0, callbacks=[cutter]
    )
    layer = model.get_layer("cut")
    assert cutter.ratios["macs"] <= 0.6 and len(cutter.cut) >= 1
    np.testing.assert_array_equal(_cut_units(layer), cutter.cut)
    assert _group_is_zero(layer, cutter.cut)
    slim = slim_model(model)
    assert _slim_units(slim.get_layer("cut")) == _slim_units(layer) - len(cutter.cut)
    assert slim_size_ratios(model)["macs"] <= 0.6
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=1e-5)


def _lstm_classifier():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 4))
    # Many small Dense units let the last cut land close under the target.
    hidden = L.Dense(96, activation="relu", name="ff")(L.LSTM(24, name="lstm")(inputs))
    model = keras.Model(inputs, L.Dense(2, activation="softmax", name="out")(hidden))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    return model


def _sequences(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6, 4)).astype("float32")
    return x, (x[:, :, 0].sum(axis=1) > 0).astype("int32")


def test_gradual_prune_to_budget_reaches_the_target_on_a_trained_lstm():
    model = _lstm_classifier()
    train, val = _sequences(256, 0), _sequences(128, 1)
    model.fit(*train, epochs=2, batch_size=32, verbose=0)
    target = 0.5
    slim, report = prune_to_budget(
        model,
        train,
        val,
        target_macs=target,
        schedule="gradual",
        epochs=2,
        finetune_epochs=1,
        max_accuracy_drop=1.0,
        batch_size=32,
    )
    assert 0.97 * target <= report.ratios["macs"] <= target
    assert slim.get_layer("lstm").units < 24
    # "auto" takes the gradual schedule now that the ranking reaches recurrent units.
    regularized = regularize_model(_lstm_classifier(), li=1e-4, lo=1e-4)
    regularized.compile("adam", "sparse_categorical_crossentropy")
    callback = BudgetCallback(target_macs=target, schedule="auto")
    regularized.fit(*train, epochs=1, batch_size=64, verbose=0, callbacks=[callback])
    assert callback.active_schedule == "gradual"
