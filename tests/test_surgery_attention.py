"""MultiHeadAttention: dead heads go, live ones (even with zero query/key) stay."""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

from keras_dropneuron import slim_model, sparsity_report
from keras_dropneuron.layer_rules.attention import MultiHeadAttentionRule
from keras_dropneuron.surgery.graph import build_graph
from keras_dropneuron.surgery.plan import make_plan

RNG = np.random.default_rng(0)


def _block(call_kwargs=None, with_mask_input=False, **layer_kwargs):
    x = keras.Input((6, 16))
    inputs = [x]
    kwargs = dict(call_kwargs or {})
    if with_mask_input:
        mask = keras.Input((6, 6), dtype="bool")
        inputs.append(mask)
        kwargs["attention_mask"] = mask
    mha = keras.layers.MultiHeadAttention(4, 8, name="mha", **layer_kwargs)
    attended = mha(x, x, **kwargs)
    if isinstance(attended, tuple):
        attended = attended[0]
    normed = keras.layers.LayerNormalization()(x + attended)
    pooled = keras.layers.GlobalAveragePooling1D()(normed)
    model = keras.Model(inputs, keras.layers.Dense(3)(pooled))
    for weight in mha.weights:
        weight.assign(RNG.standard_normal(weight.shape).astype("float32"))
    return model, mha


def _kill_heads(mha, value=(), output=(), query=()):
    for projection, heads in (("value_dense", value), ("query_dense", query)):
        dense = getattr(mha, projection)
        kernel, bias = dense.kernel.numpy(), dense.bias.numpy()
        kernel[:, list(heads)] = 0
        bias[list(heads)] = 0
        dense.kernel.assign(kernel)
        dense.bias.assign(bias)
    kernel = mha.output_dense.kernel.numpy()
    kernel[list(output)] = 0
    mha.output_dense.kernel.assign(kernel)


def _data(model):
    data = [RNG.standard_normal((3, 6, 16)).astype("float32")]
    if len(model.inputs) == 2:
        data.append(np.tril(np.ones((3, 6, 6), bool)))
    return data if len(data) > 1 else data[0]


@pytest.mark.parametrize(
    ("call_kwargs", "with_mask_input"),
    [({}, False), ({"use_causal_mask": True}, False), ({}, True)],
)
def test_dead_heads_are_removed_exactly(call_kwargs, with_mask_input, tmp_path):
    model, mha = _block(call_kwargs, with_mask_input)
    # Head 1: zero values; head 3: zero output; head 2: zero query and key, still alive.
    _kill_heads(mha, value=[1], output=[3], query=[2])
    slim, report = slim_model(model, return_report=True)
    assert slim.get_layer("mha").num_heads == 2
    np.testing.assert_array_equal(
        slim.get_layer("mha").value_dense.kernel.numpy(), mha.value_dense.kernel.numpy()[:, [0, 2]]
    )
    assert report.max_deviation <= report.tolerance
    data = _data(model)
    np.testing.assert_allclose(to_numpy(slim(data)), to_numpy(model(data)), atol=1e-5)
    assert sparsity_report(model).totals["params_after_slim"] == slim.count_params()
    slim.save(tmp_path / "slim.keras")
    reloaded = keras.saving.load_model(tmp_path / "slim.keras")
    np.testing.assert_allclose(to_numpy(reloaded(data)), to_numpy(slim(data)), atol=1e-6)


def test_a_head_with_zero_query_and_key_stays():
    model, mha = _block()
    kernel = mha.key_dense.kernel.numpy()
    kernel[:, 0] = 0
    mha.key_dense.kernel.assign(kernel)
    _kill_heads(mha, query=[0])
    # Uniform attention over the values: the head still contributes.
    assert slim_model(model).get_layer("mha").num_heads == 4


def test_attention_scores_as_an_output_keep_every_head():
    model, mha = _block({"return_attention_scores": True})
    _kill_heads(mha, value=[1])
    assert slim_model(model).get_layer("mha").num_heads == 4


def test_every_head_dead_keeps_one():
    model, mha = _block()
    _kill_heads(mha, output=[0, 1, 2, 3])
    slim = slim_model(model)
    assert slim.get_layer("mha").num_heads == 1
    data = _data(model)
    np.testing.assert_allclose(to_numpy(slim(data)), to_numpy(model(data)), atol=1e-5)


def test_attention_macs_by_hand():
    mha = keras.layers.MultiHeadAttention(4, 8, value_dim=5)
    x = keras.Input((6, 16))
    y = mha(x, x)
    # Projections 6*16*4*(8+8+5), scores and sums 6*6*4*(8+5), output 6*4*5*16.
    expected = 6 * 16 * 4 * 21 + 6 * 6 * 4 * 13 + 6 * 4 * 5 * 16
    assert MultiHeadAttentionRule().macs(mha, x, y) == expected


def test_transformer_feed_forward_units_slim():
    x = keras.Input((6, 16))
    hidden = keras.layers.Dense(32, activation="relu", name="ff1")(x)
    out = keras.layers.Dense(16, name="ff2")(hidden)
    normed = keras.layers.LayerNormalization()(x + out)  # a barrier on the residual stream
    model = keras.Model(x, normed)
    kernel = model.get_layer("ff2").kernel.numpy()
    kernel[:20] = 0
    model.get_layer("ff2").kernel.assign(kernel)
    slim = slim_model(model)
    assert slim.get_layer("ff1").units == 12 and slim.get_layer("ff2").units == 16
    data = _data(model)
    np.testing.assert_allclose(to_numpy(slim(data)), to_numpy(model(data)), atol=1e-5)


def test_transformer_block_loses_dead_heads_and_feed_forward_units():
    # Attention, residual, LayerNormalization, feed-forward, residual, LayerNormalization.
    x = keras.Input((6, 16))
    mha = keras.layers.MultiHeadAttention(4, 8, name="mha")
    normed = keras.layers.LayerNormalization(name="ln1")(x + mha(x, x))
    hidden = keras.layers.Dense(32, activation="relu", name="ff1")(normed)
    projected = keras.layers.Dense(16, name="ff2")(hidden)
    out = keras.layers.LayerNormalization(name="ln2")(normed + projected)
    pooled = keras.layers.GlobalAveragePooling1D()(out)
    model = keras.Model(x, keras.layers.Dense(3, name="head")(pooled))
    for weight in mha.weights:
        weight.assign(RNG.standard_normal(weight.shape).astype("float32"))
    _kill_heads(mha, value=[1])
    ff1, ff2 = model.get_layer("ff1"), model.get_layer("ff2")
    ff1.bias.assign(RNG.standard_normal(32).astype("float32"))
    kernel = ff1.kernel.numpy()
    kernel[:, 20:24] = 0  # units 20-23: the constant relu(bias), folded into ff2's bias
    ff1.kernel.assign(kernel)
    kernel = ff2.kernel.numpy()
    kernel[:10] = 0  # units 0-9: nobody reads them
    ff2.kernel.assign(kernel)
    plan = make_plan(build_graph(model), threshold=0.0, drop_inputs=False, approximate=False)
    reasons = dict(zip([call.name for call in plan.graph.calls], plan.reasons, strict=True))
    assert reasons["ln1"] == reasons["ln2"] == "layer type without a rule"
    slim = slim_model(model)
    assert slim.get_layer("mha").num_heads == 3
    assert slim.get_layer("ff1").units == 18
    assert slim.get_layer("ff2").units == 16  # the residual stream keeps its width
    attention = 3 * (3 * 8 + 3 * 8 * 16) + 3 * 8 * 16 + 16
    feed_forward = (16 * 18 + 18) + (18 * 16 + 16)
    assert slim.count_params() == attention + 2 * 2 * 16 + feed_forward + 16 * 3 + 3
    data = _data(model)
    np.testing.assert_allclose(to_numpy(slim(data)), to_numpy(model(data)), atol=1e-5)


@pytest.mark.parametrize("keep_regularizers", [True, False])
def test_slim_heads_carry_a_head_regularizer_of_their_count_or_none(keep_regularizers):
    """A HeadRegularizer of 4 heads cannot penalise a 2-head layer: it is resized or dropped."""
    from keras_dropneuron.regularizers import HeadRegularizer

    reg = HeadRegularizer(1e-3, num_heads=4, key_dim=8, value_dim=8)
    model, mha = _block(kernel_regularizer=reg)
    _kill_heads(mha, value=[1], output=[3])
    slim = slim_model(model, keep_regularizers=keep_regularizers)
    new = slim.get_layer("mha")
    assert new.num_heads == 2
    regularizers = [d.kernel_regularizer for d in (new.query_dense, new.output_dense)]
    if keep_regularizers:
        assert all(isinstance(r, HeadRegularizer) and r.num_heads == 2 for r in regularizers)
        assert sum(float(to_numpy(loss)) for loss in slim.losses) > 0  # it penalises
    else:
        assert regularizers == [None, None] and not slim.losses
    data = _data(model)
    slim.compile("sgd", "mse")
    slim.fit(data, np.zeros((3, 3), "float32"), epochs=1, verbose=0)  # trains, no error
