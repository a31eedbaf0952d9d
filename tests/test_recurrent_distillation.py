"""Gradual cuts with distilled fine-tuning on recurrent and attention models.

`prune_to_budget(schedule="gradual", distill=True)` on a stacked
`Bidirectional` model reading padded, masked sequences, and on an attention
model: the slim model must compute what the pruned copy computes (captured
where the pipeline hands it to `slim_model`), on the padded inputs, with
exactly the units that the copy still uses.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

from keras_dropneuron import prune_to_budget
from keras_dropneuron.budget import pipeline

L = keras.layers
LENGTH = 10


def _padded_sequences(n, seed):
    """Token ids in 1..19 followed by zeros (the padding), lengths 3 to `LENGTH`.

    The label is whether the sequence holds more tokens above 10 than at most 10.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 20, size=(n, LENGTH)).astype("int32")
    lengths = rng.integers(3, LENGTH + 1, size=n)
    x[np.arange(LENGTH) >= lengths[:, None]] = 0
    high = np.sum(x > 10, axis=1)
    return x, (2 * high > lengths).astype("int32")


def _bidirectional_model():
    inputs = keras.Input((LENGTH,), dtype="int32")
    h = L.Embedding(20, 8, mask_zero=True, name="embedding")(inputs)
    h = L.Bidirectional(L.GRU(12, return_sequences=True), name="bi_gru")(h)
    h = L.Bidirectional(L.LSTM(12), name="bi_lstm")(h)
    return keras.Model(inputs, L.Dense(2, activation="softmax", name="out")(h))


def _attention_model():
    inputs = keras.Input((LENGTH,), dtype="int32")
    h = L.Embedding(20, 16, name="embedding")(inputs)
    h = L.MultiHeadAttention(4, 4, name="attention")(h, h)
    h = L.Dense(32, activation="relu", name="ff")(L.GlobalAveragePooling1D(name="pool")(h))
    return keras.Model(inputs, L.Dense(2, activation="softmax", name="out")(h))


def _recurrent_units(layer):
    return layer.forward_layer.units


def _live_recurrent_units(layer):
    """Units whose kernel columns are not all zero in some gate of either direction."""
    live = set()
    for rnn in (layer.forward_layer, layer.backward_layer):
        kernel = to_numpy(rnn.cell.kernel)
        gates = kernel.shape[-1] // rnn.units
        columns = kernel.reshape(kernel.shape[0], gates, rnn.units)
        live |= set(np.flatnonzero(np.any(columns != 0, axis=(0, 1))).tolist())
    return len(live)


def _live_heads(layer):
    output = to_numpy(layer.output_dense.kernel)
    return int(np.sum(np.any(output != 0, axis=(1, 2))))


CASES = {
    "masked_bidirectional": (
        _bidirectional_model,
        {"bi_gru": (_recurrent_units, _live_recurrent_units)},
    ),
    "attention": (_attention_model, {"attention": (lambda layer: layer.num_heads, _live_heads)}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradual_distilled_pruning_gives_an_exact_slim_model(case, monkeypatch):
    build, counted = CASES[case]
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    (x, y), val = _padded_sequences(384, 0), _padded_sequences(128, 1)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    pruned = []

    def capture(copy, *args, **kwargs):
        pruned.append(copy)
        return slim_model(copy, *args, **kwargs)

    slim_model = pipeline.slim_model
    monkeypatch.setattr(pipeline, "slim_model", capture)
    slim, report = prune_to_budget(
        model,
        (x, y),
        val,
        target_macs=0.6,
        schedule="gradual",
        epochs=3,
        finetune_epochs=1,
        frequency=4,
        max_accuracy_drop=1.0,
        batch_size=32,
        distill=True,
    )
    (copy,) = pruned
    assert report.distillation is not None and report.ratios["macs"] <= 0.6
    for name, (units, live) in counted.items():
        assert units(slim.get_layer(name)) == live(copy.get_layer(name))
        assert units(slim.get_layer(name)) < units(model.get_layer(name))
    x_val = val[0]
    assert np.any(x_val == 0)  # padded positions are part of the comparison
    np.testing.assert_allclose(to_numpy(slim(x_val)), to_numpy(copy(x_val)), atol=1e-5)
