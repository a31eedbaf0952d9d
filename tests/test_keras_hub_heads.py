"""Grouped-query heads in keras-hub blocks: a key/value group goes with its query heads.

Mistral and Gemma blocks take `head_dim` in their config, so a block with fewer
heads keeps their size. 4 query heads read 2 key/value groups (2 each). Which
groups die is computed here from the zeroed slices.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from test_keras_hub_ffn import _backbone, _blocks, _inputs, _outputs

keras_hub = pytest.importorskip("keras_hub")

from keras_dropneuron import regularize_model, slim_model  # noqa: E402
from keras_dropneuron.layer_rules import rule_for  # noqa: E402
from keras_dropneuron.layer_rules.base import attribute  # noqa: E402


def _zero_heads(block, value_groups=(), output_heads=()):
    heads = rule_for(block).heads
    for path, kept, axis in (
        (heads.value, value_groups, heads.head_axis),
        (heads.output, output_heads, 0),
    ):
        variable = attribute(block, f"{path}.kernel")
        value = to_numpy(variable).copy()
        index = [slice(None)] * value.ndim
        index[axis] = list(kept)
        value[tuple(index)] = 0
        variable.assign(value)


def _heads(block):
    heads = rule_for(block).heads
    return tuple(
        attribute(block, f"{p}.kernel").shape[heads.head_axis] for p in (heads.query, heads.value)
    )


@pytest.mark.parametrize("name", ["MistralBackbone", "GemmaBackbone"])
def test_dead_groups_go_with_their_query_heads(name, tmp_path):
    model = _backbone(name)
    first, second = _blocks(model)
    _zero_heads(first, value_groups=[1])  # group 1 (query heads 2, 3) dead by its values
    _zero_heads(second, output_heads=[0, 1])  # group 0 dead by its query heads' outputs
    _zero_heads(second, output_heads=[2])  # one head of group 1: the group lives
    data = _inputs(model)
    before = _outputs(model, data)
    per_layer = slim_model(model, widths="per_layer")
    assert [_heads(b) for b in _blocks(per_layer)] == [(2, 1), (2, 1)]
    uniform = slim_model(model)
    assert type(uniform) is type(model)
    assert [_heads(b) for b in _blocks(uniform)] == [(2, 1), (2, 1)]
    assert uniform.get_config()["num_key_value_heads"] == 1
    head_dim = attribute(_blocks(model)[0], f"{rule_for(first).heads.value}.kernel").shape[-1]
    assert uniform.get_config()["head_dim"] == head_dim
    for slim in (per_layer, uniform):
        for a, b in zip(before, _outputs(slim, data), strict=True):
            np.testing.assert_allclose(b, a, atol=2e-5)
    uniform.save(tmp_path / "slim.keras")
    loaded = keras.saving.load_model(tmp_path / "slim.keras")
    for a, b in zip(before, _outputs(loaded, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)


def test_uniform_heads_keep_the_largest_count():
    model = _backbone("MistralBackbone")
    _zero_heads(_blocks(model)[0], value_groups=[0])
    slim = slim_model(model)
    # Block 1 keeps both groups, so block 0 keeps its dead one too.
    assert [_heads(b) for b in _blocks(slim)] == [(4, 2), (4, 2)]
    per_layer = slim_model(model, widths="per_layer")
    assert [_heads(b) for b in _blocks(per_layer)] == [(2, 1), (4, 2)]


def test_heads_whose_size_is_derived_are_kept():
    # Qwen and Llama derive the head size from hidden_dim // num_query_heads.
    model = _backbone("QwenBackbone")
    block = _blocks(model)[0]
    value = block._self_attention_layer._value_dense
    value.kernel.assign(np.zeros(value.kernel.shape, "float32"))
    value.bias.assign(np.zeros(value.bias.shape, "float32"))
    slim = slim_model(model, widths="per_layer")
    assert _blocks(slim)[0]._self_attention_layer._value_dense.kernel.shape[1] == 2


def test_gemma_scaled_by_hidden_size_keeps_its_heads():
    model = keras_hub.models.GemmaBackbone(
        vocabulary_size=50,
        num_layers=1,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        head_dim=16,
        query_head_dim_normalize=False,
    )
    block = _blocks(model)[0]
    _zero_heads(block, value_groups=[0])
    assert rule_for(block).heads_kept_reason(block) is not None
    slim = slim_model(model, widths="per_layer")
    assert _heads(_blocks(slim)[0]) == (4, 2)


def test_head_penalties_match_numpy():
    model = regularize_model(_backbone("MistralBackbone", 1), li=0.0, lo=0.0, heads=1e-2)
    attention = _blocks(model)[0]._self_attention_layer
    value, output = attention._value_dense.kernel, attention._output_dense.kernel
    v, o = to_numpy(value), to_numpy(output)  # (dim, kv, head_dim), (heads, head_dim, dim)
    expected = 1e-2 * (
        np.linalg.norm(v.transpose(1, 0, 2).reshape(2, -1), axis=1).sum()
        + np.linalg.norm(o.reshape(4, -1), axis=1).sum()
    )
    got = float(to_numpy(value.regularizer(value))) + float(to_numpy(output.regularizer(output)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_encoder_heads_go_with_their_size_kept(tmp_path):
    from keras_dropneuron.layer_rules.keras_hub_blocks import HeadSizedTransformerEncoder

    model = _backbone("BertBackbone")
    for i, block in enumerate(_blocks(model)):
        value = block._self_attention_layer._value_dense
        kernel, bias = to_numpy(value.kernel).copy(), to_numpy(value.bias).copy()
        kernel[:, i], bias[i] = 0, 0  # block i loses head i
        value.kernel.assign(kernel)
        value.bias.assign(bias)
    data = _inputs(model)
    before = _outputs(model, data)
    slim = slim_model(model, widths="per_layer")
    blocks = _blocks(slim)
    assert all(type(b) is HeadSizedTransformerEncoder for b in blocks)
    assert [tuple(b._self_attention_layer._query_dense.kernel.shape) for b in blocks] == [
        (32, 3, 8)
    ] * 2  # 3 heads of the same size 8 (32 // 4)
    for a, b in zip(before, _outputs(slim, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)
    slim.save(tmp_path / "slim.keras")
    loaded = keras.saving.load_model(tmp_path / "slim.keras")
    for a, b in zip(before, _outputs(loaded, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)
    # A BertBackbone's config derives the head size: at uniform widths the heads stay.
    uniform = slim_model(model)
    assert type(uniform) is type(model)
    assert _blocks(uniform)[0]._self_attention_layer._query_dense.kernel.shape[1] == 4


def test_head_sized_encoder_computes_what_the_encoder_computes():
    from keras_dropneuron.layer_rules.keras_hub_blocks import HeadSizedTransformerEncoder

    x = np.random.default_rng(0).standard_normal((2, 6, 32)).astype("float32")
    encoder = keras_hub.layers.TransformerEncoder(intermediate_dim=64, num_heads=4)
    sized = HeadSizedTransformerEncoder(intermediate_dim=64, num_heads=4, head_dim=8)
    encoder(x), sized(x)
    assert len(sized.weights) == len(encoder.weights)  # the derived attention is gone
    sized.set_weights(encoder.get_weights())
    np.testing.assert_allclose(to_numpy(sized(x)), to_numpy(encoder(x)), atol=1e-6)


@pytest.mark.parametrize(
    "imports",
    [
        "import keras_hub, keras_dropneuron",
        "import keras_dropneuron; keras_dropneuron.layer_rules.load_keras_hub_rules()",
    ],
)
def test_head_sized_encoder_loads_in_a_new_process(imports, tmp_path):
    import os
    import subprocess
    import sys

    model = _backbone("BertBackbone", 1)
    value = _blocks(model)[0]._self_attention_layer._value_dense
    kernel, bias = to_numpy(value.kernel).copy(), to_numpy(value.bias).copy()
    kernel[:, 0], bias[0] = 0, 0
    value.kernel.assign(kernel)
    value.bias.assign(bias)
    slim = slim_model(model, widths="per_layer")
    path = tmp_path / "slim.keras"
    slim.save(path)
    code = f"{imports}; import keras; print(type(keras.saving.load_model({str(path)!r})).__name__)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("Functional")
