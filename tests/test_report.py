import keras
import numpy as np
import pytest
from shared_layers import shared_with_nested_model

from keras_dropneuron import slim_model, sparsity_report

L = keras.layers


def test_mlp_counts_match_hand_computation():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            L.Dense(5, name="h1"),
            L.Dropout(0.5),
            L.Dense(4, name="h2"),
            L.Dense(2, name="out"),
        ]
    )
    h1, h2, out = (model.get_layer(n) for n in ("h1", "h2", "out"))
    w1 = np.asarray(h1.kernel.numpy())
    w1[[0, 3], :] = 0  # inputs 0 and 3 dead
    w1[:, 1] = 0  # h1 unit 1 receives nothing
    h1.kernel.assign(w1)
    w2 = np.asarray(h2.kernel.numpy())
    w2[4, :] = 0  # h1 unit 4 sends nothing (through Dropout)
    w2[:, 2] = 0  # h2 unit 2 receives nothing
    h2.kernel.assign(w2)
    w3 = np.asarray(out.kernel.numpy())
    w3[0, :] = 0  # h2 unit 0 sends nothing
    out.kernel.assign(w3)

    report = sparsity_report(model)
    rows = {row["layer"]: row for row in report.to_list()}
    assert rows["h1"]["inputs_alive"] == 4
    assert rows["h1"]["units_alive_incoming"] == 4
    assert rows["h1"]["units_alive_outgoing"] == 4
    assert rows["h1"]["units_alive"] == 3  # units 1 and 4 are dead
    assert rows["h2"]["units_alive"] == 2  # units 0 and 2 are dead
    assert rows["out"]["units_alive"] == 2
    nonzero = [int(np.count_nonzero(w)) for w in (w1, w2, w3)]
    assert [rows[n]["nonzero_weights"] for n in ("h1", "h2", "out")] == nonzero
    assert rows["h1"]["compression"] == pytest.approx(30 / nonzero[0])
    assert report.totals["nonzero_weights"] == sum(nonzero)
    assert report.totals["compression"] == pytest.approx(58 / sum(nonzero))
    assert report.totals["units_alive"] == 3 + 2 + 2
    text = str(report)
    assert "h1 (Dense)" in text and "3/5" in text and "Total" in text


def test_flatten_maps_conv_channel_to_dense_rows():
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            L.Conv2D(3, 3, name="conv"),  # output 2x2x3
            L.Flatten(),
            L.Dense(2, name="fc"),
        ]
    )
    fc = model.get_layer("fc")
    w = np.asarray(fc.kernel.numpy())
    w[np.arange(4) * 3 + 1, :] = 0  # channel 1 at every position p: rows p * C + c
    fc.kernel.assign(w)
    row = sparsity_report(model).to_list()[0]
    assert row["units_alive_outgoing"] == 2
    assert row["units_alive"] == 2
    w[0, :] = 0  # only position 0 of channel 0: channel 0 still read elsewhere
    fc.kernel.assign(w)
    assert sparsity_report(model).to_list()[0]["units_alive"] == 2


def test_unknown_consumer_counts_every_unit_as_read():
    inputs = keras.Input((4,))
    hidden = L.Dense(3, name="h")(inputs)
    outputs = L.Dense(2, name="o")(L.LayerNormalization()(hidden))
    model = keras.Model(inputs, outputs)
    o = model.get_layer("o")
    o.kernel.assign(np.zeros((3, 2), "float32"))
    assert sparsity_report(model).to_list()[0]["units_alive_outgoing"] == 3


def test_threshold_counts_small_weights_as_zero():
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    model.layers[0].kernel.assign(np.array([[1e-4, 1.0], [2e-4, 0.5], [0.0, 2.0]], "float32"))
    assert sparsity_report(model).to_list()[0]["nonzero_weights"] == 5
    row = sparsity_report(model, threshold=1e-3).to_list()[0]
    assert row["nonzero_weights"] == 3
    assert row["units_alive_incoming"] == 1


def test_bad_input():
    with pytest.raises(TypeError, match="`model`"):
        sparsity_report([1, 2])
    with pytest.raises(ValueError, match="`threshold`"):
        sparsity_report(keras.Sequential([keras.Input((3,)), L.Dense(2)]), threshold=-1)


def _zero_rows(layer, rows):
    """Zeroes the weights of `layer` that read input units `rows`."""
    kernel = np.asarray(layer.kernel.numpy())
    kernel[rows, :] = 0
    layer.kernel.assign(kernel)


def test_units_of_a_model_output_are_read():
    inputs = keras.Input((4,))
    hidden = L.Dense(3, name="h")(inputs)
    model = keras.Model(inputs, [hidden, L.Dense(2, name="o")(hidden)])
    _zero_rows(model.get_layer("o"), [0, 1])  # "o" reads only unit 2 of "h"
    rows = {row["layer"]: row for row in sparsity_report(model).to_list()}
    assert rows["h"]["units_alive_outgoing"] == 3  # every unit is an output


def _feeds_a_nested_model():
    """`h` (3 units) feeds `o` and the nested model `inner` (whose `inner_fc` reads it)."""
    inner_inputs = keras.Input((3,))
    inner = keras.Model(inner_inputs, L.Dense(2, name="inner_fc")(inner_inputs), name="inner")
    inputs = keras.Input((4,))
    hidden = L.Dense(3, name="h")(inputs)
    outputs = L.Add()([L.Dense(2, name="o")(hidden), inner(hidden)])
    return keras.Model(inputs, outputs)


def test_units_read_inside_a_nested_model_are_followed():
    model = _feeds_a_nested_model()
    _zero_rows(model.get_layer("o"), [0, 1])  # "o" reads only unit 2 of "h"
    inner_fc = model.get_layer("inner").get_layer("inner_fc")
    rows = {row["layer"]: row for row in sparsity_report(model).to_list()}
    assert rows["h"]["units_alive_outgoing"] == 3  # inner_fc reads all three
    _zero_rows(inner_fc, [0])  # now unit 0 is read by nobody
    rows = {row["layer"]: row for row in sparsity_report(model).to_list()}
    assert rows["h"]["units_alive_outgoing"] == 2
    assert rows["h"]["units_alive"] == 2


def test_units_leaving_a_nested_model_are_followed_outside():
    inner_inputs = keras.Input((4,))
    inner = keras.Model(inner_inputs, L.Dense(3, name="inner_h")(inner_inputs), name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, name="o")(inner(inputs)))
    _zero_rows(model.get_layer("o"), [0])  # unit 0 of inner_h is read by nobody
    rows = {row["layer"]: row for row in sparsity_report(model).to_list()}
    assert rows["inner_h"]["units_alive_outgoing"] == 2


def test_layer_shared_with_a_nested_model_is_listed_once():
    report = sparsity_report(shared_with_nested_model())
    assert [row["layer"] for row in report.to_list()] == ["shared", "out"]
    assert report.totals["total_weights"] == 32 + 8
    assert report.totals["units"] == 4 + 2


def test_slim_keeps_column_for_layers_kept_whole_and_thresholded_embeddings():
    # Found by a new-user probe: channels_first layers are kept whole, and their
    # channels are not on the last axis; an Embedding dimension within the
    # threshold counts as zero, as a kernel column does.
    inputs = keras.Input((4, 3))
    hidden = keras.layers.Conv1D(10, 1, data_format="channels_first", name="cf")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(hidden)))
    row = sparsity_report(model).to_list()[0]
    assert row["units"] == row["units_after_slim"] == slim_model(model).get_layer("cf").filters

    ids = keras.Input((5,), dtype="int32")
    embedding = keras.layers.Embedding(30, 16, name="emb")
    flat = keras.layers.Flatten()(keras.layers.Dense(12)(embedding(ids)))
    model = keras.Model(ids, keras.layers.Dense(2)(flat))
    table = embedding.embeddings.numpy()
    table[:, :5] = 1e-4
    embedding.embeddings.assign(table)
    row = sparsity_report(model, threshold=1e-3).to_list()[0]
    assert row["units_alive_incoming"] == row["units_after_slim"] == 11
    assert slim_model(model, threshold=1e-3).get_layer("emb").output_dim == 11
