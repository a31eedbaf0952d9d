"""keras-hub transformer blocks: dead feed-forward units are removed, exactly.

Small randomly initialised backbones from their constructors (nothing is
downloaded), with some feed-forward units made dead by zeroing their weights,
as a trained and pruned model holds them. Which units are dead is computed
here with numpy from the zeroed slices.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

keras_hub = pytest.importorskip("keras_hub")

from keras_dropneuron import regularize_model, slim_model, sparsity_report  # noqa: E402
from keras_dropneuron.layer_rules import rule_for  # noqa: E402
from keras_dropneuron.layer_rules.base import attribute  # noqa: E402
from keras_dropneuron.layer_rules.transformer_block import TransformerBlockRule  # noqa: E402
from keras_dropneuron.regularizers import DropNeuronRegularizer  # noqa: E402

VOCAB, LENGTH, HIDDEN, WIDTH = 50, 12, 32, 64

BACKBONES = {
    "BertBackbone": dict(num_heads=4, max_sequence_length=LENGTH),
    "GPT2Backbone": dict(num_heads=4, max_sequence_length=LENGTH),
    "MistralBackbone": dict(num_query_heads=4, num_key_value_heads=2),
    "QwenBackbone": dict(num_query_heads=4, num_key_value_heads=2),
    "LlamaBackbone": dict(num_query_heads=4, num_key_value_heads=2),
    "GemmaBackbone": dict(num_query_heads=4, num_key_value_heads=2, head_dim=16),
}


def _backbone(name, num_layers=2):
    return getattr(keras_hub.models, name)(
        vocabulary_size=VOCAB,
        num_layers=num_layers,
        hidden_dim=HIDDEN,
        intermediate_dim=WIDTH,
        **BACKBONES[name],
    )


def _blocks(model):
    return [layer for layer in model.layers if isinstance(rule_for(layer), TransformerBlockRule)]


def _zero(block, path, units, axis):
    variable = attribute(block, f"{path}.kernel")
    value = to_numpy(variable).copy()
    index = [slice(None)] * value.ndim
    index[axis] = list(units)
    value[tuple(index)] = 0
    variable.assign(value)


def _inputs(model, batch=3):
    rng = np.random.default_rng(0)
    data = {}
    for tensor in model.inputs:
        name = tensor.name
        if name == "token_ids":
            data[name] = rng.integers(1, VOCAB, (batch, LENGTH)).astype("int32")
        elif "mask" in name:
            data[name] = np.ones((batch, LENGTH), "int32")
        else:
            data[name] = np.zeros((batch, LENGTH), "int32")
    return data


def _outputs(model, data):
    return [to_numpy(t) for t in keras.tree.flatten(model(data))]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_dead_units_are_removed_exactly(name):
    model = _backbone(name)
    expected = []
    for i, block in enumerate(_blocks(model)):
        ffn = rule_for(block).ffn
        up, down = set(range(i, i + 4)), set(range(20, 26 - i))
        _zero(block, ffn.up, up, 1)
        _zero(block, ffn.down, down, 0)
        gate = set()
        if ffn.gate:
            gate = {27, 28, 29}
            _zero(block, ffn.gate, gate, 1)
        width = attribute(block, f"{ffn.up}.kernel").shape[1]
        expected.append(width - len(up | down | gate))
    data = _inputs(model)
    before = _outputs(model, data)
    slim = slim_model(model, widths="per_layer")  # each block at its own width
    kept = [attribute(b, f"{rule_for(b).ffn.up}.kernel").shape[1] for b in _blocks(slim)]
    assert kept == expected
    # Each removed unit took its up (and gate) column and its down row.
    per_unit = sum(
        np.prod(attribute(b, f"{p}.kernel").shape) // attribute(b, f"{p}.kernel").shape[a]
        for b in _blocks(model)[:1]
        for p, a in ((rule_for(b).ffn.up, 1), (rule_for(b).ffn.down, 0), (rule_for(b).ffn.gate, 1))
        if p
    )
    up_bias = attribute(_blocks(model)[0], f"{rule_for(_blocks(model)[0]).ffn.up}.bias")
    per_unit += 0 if up_bias is None else 1
    removed = sum(WIDTH // (2 if name == "GemmaBackbone" else 1) - k for k in kept)
    assert model.count_params() - slim.count_params() == removed * per_unit
    for a, b in zip(before, _outputs(slim, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)


def test_constant_unit_is_folded_into_the_down_bias():
    # A plain network's unit with a zero up column still adds gelu(bias) * its row.
    model = _backbone("BertBackbone", num_layers=1)
    block = _blocks(model)[0]
    bias = block._feedforward_intermediate_dense.bias
    bias.assign(np.linspace(-1, 1, WIDTH).astype("float32"))
    _zero(block, "_feedforward_intermediate_dense", range(10), 1)
    data = _inputs(model)
    before = _outputs(model, data)
    slim = slim_model(model)
    assert _blocks(slim)[0]._feedforward_intermediate_dense.kernel.shape[1] == WIDTH - 10
    for a, b in zip(before, _outputs(slim, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)


def test_gate_column_with_live_constant_is_kept():
    # silu(0) = 0, so a zero gate column kills the unit; with a gate bias the
    # unit is `silu(b) * up(x)`, alive.
    model = _backbone("QwenBackbone", num_layers=1)
    block = _blocks(model)[0]
    rule = rule_for(block)
    _zero(block, "_feedforward_gate_dense", range(6), 1)
    dead = rule.dead_units(block, 0.0)
    assert np.flatnonzero(dead).tolist() == list(range(6))
    block.activation = keras.activations.sigmoid  # sigmoid(0) = 0.5: not dead
    assert not rule.dead_units(block, 0.0).any()


@pytest.mark.parametrize("name", ["BertBackbone", "GPT2Backbone", "MistralBackbone"])
def test_slim_model_round_trips_keras_file(name, tmp_path):
    model = _backbone(name, num_layers=1)
    _zero(_blocks(model)[0], rule_for(_blocks(model)[0]).ffn.down, range(16), 0)
    slim = slim_model(model)
    path = tmp_path / "slim.keras"
    slim.save(path)
    loaded = keras.saving.load_model(path)
    data = _inputs(model)
    for a, b in zip(_outputs(slim, data), _outputs(loaded, data), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6)


def test_regularize_model_penalises_feed_forward_groups():
    model = _backbone("BertBackbone", num_layers=1)
    regularized = regularize_model(model, li=1e-2, lo=2e-2)
    block = _blocks(regularized)[0]
    up = block._feedforward_intermediate_dense.kernel
    down = block._feedforward_output_dense.kernel
    assert isinstance(up.regularizer, DropNeuronRegularizer)
    u, d = to_numpy(up), to_numpy(down)
    expected = 1e-2 * np.linalg.norm(u, axis=0).sum() + 2e-2 * np.linalg.norm(d, axis=1).sum()
    got = float(to_numpy(up.regularizer(up))) + float(to_numpy(down.regularizer(down)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The user's model is not touched.
    assert _blocks(model)[0]._feedforward_intermediate_dense.kernel.regularizer is None


def test_sparsity_report_counts_feed_forward_units():
    model = _backbone("GPT2Backbone", num_layers=1)
    block = _blocks(model)[0]
    _zero(block, "_feedforward_output_dense", range(9), 0)
    rows = {row["layer"]: row for row in sparsity_report(model).to_list()}
    assert rows[block.name]["units"] == WIDTH
    assert rows[block.name]["units_alive"] == WIDTH - 9
    assert rows[block.name]["units_after_slim"] == WIDTH - 9


def test_sparsity_report_counts_heads():
    model = _backbone("MistralBackbone")  # 4 query heads read 2 key/value groups
    first, second = _blocks(model)
    heads = rule_for(first).heads
    _zero(first, heads.value, [1], heads.head_axis)  # group 1: query heads 2 and 3 dead
    _zero(first, heads.output, [0], 0)  # head 0 dead; head 1 keeps group 0
    report = sparsity_report(model, widths="per_layer")
    rows = {row["layer"]: row for row in report.to_list()}
    assert (rows[first.name]["heads"], rows[first.name]["heads_alive"]) == (4, 1)
    assert rows[first.name]["heads_after_slim"] == 2  # group 0 with both its query heads
    assert [rows[second.name][k] for k in ("heads", "heads_alive", "heads_after_slim")] == [4] * 3
    assert [report.totals[k] for k in ("heads", "heads_alive", "heads_after_slim")] == [8, 5, 6]
    assert "Heads alive (slim keeps)" in str(report)
    slim = slim_model(model, widths="per_layer")
    kept = [attribute(b, f"{heads.query}.kernel").shape[heads.head_axis] for b in _blocks(slim)]
    assert kept == [2, 4]
    # By default the report counts what slim_model builds by default: uniform widths.
    uniform = {row["layer"]: row for row in sparsity_report(model).to_list()}
    assert uniform[first.name]["heads_after_slim"] == 4


@pytest.mark.parametrize("widths", ["uniform", "per_layer"])
def test_sparsity_report_counts_what_slim_model_builds(widths):
    model = _backbone("GPT2Backbone")
    first, second = _blocks(model)
    _zero(first, "_feedforward_output_dense", range(30), 0)  # 34 alive
    _zero(second, "_feedforward_output_dense", range(10), 0)  # 54 alive
    report = sparsity_report(model, widths=widths)
    slim = slim_model(model, widths=widths)
    rows = {row["layer"]: row for row in report.to_list()}
    kept = [_kernel_width(b) for b in _blocks(slim)]
    assert [rows[b.name]["units_after_slim"] for b in (first, second)] == kept
    assert kept == ([54, 54] if widths == "uniform" else [34, 54])
    assert report.totals["params_after_slim"] == slim.count_params()


def _kernel_width(block):
    return attribute(block, f"{rule_for(block).ffn.up}.kernel").shape[1]


def test_sparsity_report_sides_of_feed_forward_units():
    # Incoming: the up columns; outgoing: the down rows (each unit's `lo` group).
    model = _backbone("GPT2Backbone", num_layers=1)
    block = _blocks(model)[0]
    _zero(block, "_feedforward_output_dense", range(6), 0)
    _zero(block, "_feedforward_intermediate_dense", range(4, 10), 1)
    row = {r["layer"]: r for r in sparsity_report(model).to_list()}[block.name]
    assert row["units_alive_incoming"] == WIDTH - 6
    assert row["units_alive_outgoing"] == WIDTH - 6
    assert row["units_alive"] == WIDTH - 10


def test_round_to_keeps_a_multiple_of_units():
    model = _backbone("MistralBackbone")
    for i, block in enumerate(_blocks(model)):
        _zero(block, "_feedforward_output_dense", range(5 + 3 * i), 0)  # 59 and 56 alive
    data = _inputs(model)
    slim = slim_model(model, widths="per_layer", round_to=8)
    kept = [b._feedforward_output_dense.kernel.shape[0] for b in _blocks(slim)]
    assert kept == [64, 56]  # 59 rounds up to the whole width, 56 is a multiple
    for a, b in zip(_outputs(model, data), _outputs(slim, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)


def test_block_overriding_call_is_kept_whole_with_its_reason():
    class Doubling(keras_hub.layers.TransformerEncoder):
        def call(self, inputs, **kwargs):
            return 2.0 * super().call(inputs, **kwargs)

    inputs = keras.Input((LENGTH, HIDDEN))
    block = Doubling(intermediate_dim=WIDTH, num_heads=4, name="doubling")
    model = keras.Model(inputs, block(inputs))
    _zero(block, "_feedforward_output_dense", range(16), 0)
    slim, report = slim_model(model, return_report=True)
    assert slim.get_layer("doubling")._feedforward_output_dense.kernel.shape[0] == WIDTH
    assert "Doubling overrides call()" in str(report)
    x = np.random.default_rng(0).standard_normal((2, LENGTH, HIDDEN)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=2e-5)


def test_block_with_lora_weights_is_refused_naming_them():
    # Its config does not hold the LoRA factors, so it cannot be copied whole either.
    model = _backbone("GPT2Backbone", num_layers=1)
    _blocks(model)[0]._feedforward_intermediate_dense.enable_lora(2)
    with pytest.raises(ValueError, match="transformer_layer_0.*lora_kernel_a"):
        slim_model(model, widths="per_layer")
