"""Grouped-query heads in keras-hub blocks: a key/value group goes with its query heads.

Mistral and Gemma blocks take `head_dim` in their config, so a block with fewer
heads keeps their size; BERT's encoder, GPT-2's decoder, Llama and Qwen derive
it, and are re-created as head-sized subclasses. 4 query heads read 2
key/value groups (2 each), or 4 key/value heads in BERT and GPT-2. Which
groups die is computed here from the zeroed slices.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from test_keras_hub_ffn import HIDDEN, LENGTH, WIDTH, _backbone, _blocks, _inputs, _outputs

keras_hub = pytest.importorskip("keras_hub")

from keras_dropneuron import regularize_model, slim_model  # noqa: E402
from keras_dropneuron.layer_rules import rule_for  # noqa: E402
from keras_dropneuron.layer_rules.base import attribute  # noqa: E402


def _zero_heads(block, value_groups=(), output_heads=()):
    """Zeroes value slices (kernel and bias) of `value_groups`, output slices of `output_heads`."""
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
    bias = attribute(block, f"{heads.value}.bias")
    if bias is not None:
        value = to_numpy(bias).copy()
        value[list(value_groups)] = 0  # (heads, head_dim)
        bias.assign(value)


def _random_biases(block, seed=0):
    """Non-zero query, key and value biases (they start at zero), so slicing them shows."""
    heads, rng = rule_for(block).heads, np.random.default_rng(seed)
    for path in (heads.query, heads.key, heads.value):
        bias = attribute(block, f"{path}.bias")
        if bias is not None:
            bias.assign(rng.standard_normal(bias.shape).astype("float32"))


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


def test_subclass_of_a_derived_head_size_block_keeps_its_heads():
    # It runs its parent's `call()`, but may build its own attention.
    from keras_hub.src.models.qwen.qwen_decoder import QwenTransformerDecoder

    class MyDecoder(QwenTransformerDecoder):
        pass

    inputs = keras.Input((LENGTH, HIDDEN))
    block = MyDecoder(intermediate_dim=WIDTH, num_query_heads=4, num_key_value_heads=2)
    model = keras.Model(inputs, block(inputs))
    _zero_heads(block, value_groups=[0])
    assert "may build its own attention" in rule_for(block).heads_kept_reason(block)
    x = np.random.default_rng(0).standard_normal((2, LENGTH, HIDDEN)).astype("float32")
    slim = slim_model(model, widths="per_layer")
    assert _heads(slim.layers[-1]) == (4, 2)
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=2e-5)


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


def _expected_heads(block, value_groups=(), output_heads=()):
    """`(query heads, key/value heads)` left once the groups dead by these zeroed slices go."""
    query, kv = _heads(block)
    ratio = query // kv
    dead = np.isin(np.arange(query), output_heads) | np.repeat(
        np.isin(np.arange(kv), value_groups), ratio
    )
    kept = int((~dead.reshape(kv, ratio).all(axis=1)).sum())
    return kept * ratio, kept


def _kernel_heads(block):
    """Heads held by each of the four projection kernels (the output's on axis 0)."""
    heads = rule_for(block).heads
    return [
        attribute(block, f"{path}.kernel").shape[axis]
        for path, axis in (
            (heads.query, heads.head_axis),
            (heads.key, heads.head_axis),
            (heads.value, heads.head_axis),
            (heads.output, 0),
        )
    ]


@pytest.mark.parametrize("name", ["GPT2Backbone", "LlamaBackbone", "QwenBackbone"])
def test_decoder_heads_go_with_their_size_kept(name, tmp_path):
    from test_keras_hub_workflow import _block_macs

    from keras_dropneuron.layer_rules import keras_hub_blocks

    model = _backbone(name)
    first, second = _blocks(model)
    zeroed = [dict(value_groups=[1]), dict(output_heads=[0, 1, 2])]
    expected = []
    for block, heads in zip((first, second), zeroed, strict=True):
        _random_biases(block)
        _zero_heads(block, **heads)
        expected.append(_expected_heads(block, **heads))
    # GPT-2: 4 heads, one group each; Llama, Qwen: 4 query heads, 2 groups.
    assert expected == ([(3, 3), (1, 1)] if name == "GPT2Backbone" else [(2, 1), (2, 1)])
    data = _inputs(model)
    before = _outputs(model, data)
    slim = slim_model(model, widths="per_layer")
    head_sized = {
        "GPT2Backbone": keras_hub_blocks.HeadSizedTransformerDecoder,
        "LlamaBackbone": keras_hub_blocks.HeadSizedLlamaTransformerDecoder,
        "QwenBackbone": keras_hub_blocks.HeadSizedQwenTransformerDecoder,
    }[name]
    blocks = _blocks(slim)
    assert [type(b) for b in blocks] == [head_sized] * 2
    assert [_heads(b) for b in blocks] == expected
    for block, (query, kv) in zip(blocks, expected, strict=True):
        assert _kernel_heads(block) == [query, kv, kv, query]
        value = rule_for(block).heads.value
        assert attribute(block, f"{value}.kernel").shape[-1] == HIDDEN // 4  # the size stays
    for a, b in zip(before, _outputs(slim, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)
    # Multiply-adds per token count the heads each block holds: q, k, v, o projections,
    # scores and values against one key position, and the network.
    gated = 3 if name != "GPT2Backbone" else 2
    assert list(_block_macs(slim).values()) == [
        HIDDEN * 8 * (2 * query + 2 * kv) + 2 * query * 8 + gated * HIDDEN * WIDTH
        for query, kv in expected
    ]
    slim.save(tmp_path / "slim.keras")
    loaded = keras.saving.load_model(tmp_path / "slim.keras")
    assert [type(b) for b in _blocks(loaded)] == [head_sized] * 2
    for a, b in zip(before, _outputs(loaded, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)
    # The backbone's own config derives the head size: at uniform widths the heads stay.
    uniform = slim_model(model)
    assert type(uniform) is type(model)
    assert [_heads(b) for b in _blocks(uniform)] == [_heads(first)] * 2
    for a, b in zip(before, _outputs(uniform, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)


def _decoder_classes(kind):
    """`(keras-hub class, head-sized class, heads -> constructor arguments)`."""
    from keras_hub.src.models.llama.llama_decoder import LlamaTransformerDecoder
    from keras_hub.src.models.qwen.qwen_decoder import QwenTransformerDecoder

    from keras_dropneuron.layer_rules import keras_hub_blocks as blocks

    def grouped(query, kv):
        return dict(num_query_heads=query, num_key_value_heads=kv)

    def windowed(query, kv):  # a window shorter than the sequences
        return dict(grouped(query, kv), use_sliding_window_attention=True, sliding_window_size=3)

    return {
        "gpt2": (
            keras_hub.layers.TransformerDecoder,
            blocks.HeadSizedTransformerDecoder,
            lambda query, kv: dict(num_heads=query),
        ),
        "llama": (LlamaTransformerDecoder, blocks.HeadSizedLlamaTransformerDecoder, grouped),
        "qwen": (QwenTransformerDecoder, blocks.HeadSizedQwenTransformerDecoder, windowed),
    }[kind]


def _copy_heads(source, target, queries, groups):
    """Copies every weight of `source` into `target`, the attention's to the kept heads."""
    heads = rule_for(source).heads
    kept = {heads.query: queries, heads.key: groups, heads.value: groups, heads.output: queries}
    for path in rule_for(source).state:
        value = attribute(source, path)
        if value is None:
            continue
        value = to_numpy(value)
        sublayer, name = path.rsplit(".", 1)
        if sublayer in kept and not (sublayer == heads.output and name == "bias"):
            axis = heads.head_axis if name == "kernel" and sublayer != heads.output else 0
            value = np.take(value, kept[sublayer], axis=axis)
        attribute(target, path).assign(value)


def _cached_calls(block, x, kv_heads, head_dim=8):
    """Seeds a cache with 4 positions, then decodes the 5th: both outputs and the cache."""
    cache = keras.ops.zeros((x.shape[0], 2, 6, kv_heads, head_dim))
    seeded, cache = block(
        keras.ops.convert_to_tensor(x[:, :4]),
        self_attention_cache=cache,
        self_attention_cache_update_index=0,
    )
    step, cache = block(
        keras.ops.convert_to_tensor(x[:, 4:5]),
        self_attention_cache=cache,
        self_attention_cache_update_index=4,
    )
    return to_numpy(seeded), to_numpy(step), to_numpy(cache)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen"])
def test_head_sized_decoder_computes_what_the_decoder_computes(kind):
    parent, head_sized, heads = _decoder_classes(kind)
    query, kv = (4, 4) if kind == "gpt2" else (4, 2)
    x = np.random.default_rng(1).standard_normal((2, 6, HIDDEN)).astype("float32")
    decoder = parent(intermediate_dim=WIDTH, **heads(query, kv))
    decoder(x)
    _random_biases(decoder)
    # The same heads, their size given: the same weights, the same outputs.
    same = head_sized(intermediate_dim=WIDTH, head_dim=8, **heads(query, kv))
    same(x)
    assert len(same.weights) == len(decoder.weights)
    _copy_heads(decoder, same, np.arange(query), np.arange(kv))
    np.testing.assert_allclose(to_numpy(same(x)), to_numpy(decoder(x)), atol=1e-6)
    # Fewer heads of the same size (not hidden_dim // heads): the decoder whose other
    # heads add nothing, with and without a cache.
    groups = np.array([0, 2]) if kind == "gpt2" else np.array([1])
    ratio = query // kv
    queries = (groups[:, None] * ratio + np.arange(ratio)).ravel()
    _zero_heads(decoder, output_heads=np.setdiff1d(np.arange(query), queries))
    smaller = head_sized(intermediate_dim=WIDTH, head_dim=8, **heads(len(queries), len(groups)))
    smaller(x)
    assert _kernel_heads(smaller) == [len(queries), len(groups), len(groups), len(queries)]
    assert attribute(smaller, f"{rule_for(smaller).heads.value}.kernel").shape[-1] == 8
    _copy_heads(decoder, smaller, queries, groups)
    np.testing.assert_allclose(to_numpy(smaller(x)), to_numpy(decoder(x)), atol=2e-5)
    *outputs, cache = _cached_calls(decoder, x, kv)
    *small_outputs, small_cache = _cached_calls(smaller, x, len(groups))
    for a, b in zip(outputs, small_outputs, strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)
    np.testing.assert_allclose(small_cache, cache[:, :, :, groups], atol=2e-5)
    # The config holds the head size (and, for Qwen, the sliding window).
    config = smaller.get_config()
    assert config["head_dim"] == 8
    copy = head_sized.from_config(config)
    copy(x)
    assert _kernel_heads(copy) == _kernel_heads(smaller)
    if kind == "qwen":
        assert (copy.use_sliding_window_attention, copy.sliding_window_size) == (True, 3)


def test_qwen_sliding_window_survives_slimming(tmp_path):
    # QwenTransformerDecoder's own config leaves the window out.
    model = keras_hub.models.QwenBackbone(
        vocabulary_size=50,
        num_layers=2,
        hidden_dim=HIDDEN,
        intermediate_dim=WIDTH,
        num_query_heads=4,
        num_key_value_heads=2,
        use_sliding_window_attention=True,
        sliding_window_size=3,
    )
    first, second = _blocks(model)
    _zero_heads(first, value_groups=[0])  # re-created head-sized
    kernel = to_numpy(second._feedforward_output_dense.kernel).copy()
    kernel[:10] = 0  # re-created as a QwenTransformerDecoder, from the rule's config
    second._feedforward_output_dense.kernel.assign(kernel)
    data = _inputs(model)
    before = _outputs(model, data)
    slim = slim_model(model, widths="per_layer")
    for block in _blocks(slim):
        assert (block.use_sliding_window_attention, block.sliding_window_size) == (True, 3)
    assert _heads(_blocks(slim)[0]) == (2, 1)
    for a, b in zip(before, _outputs(slim, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)


@pytest.mark.parametrize("head_dim", [0, -1, 2.5, True, "8"])
def test_head_sized_decoder_refuses_a_bad_head_dim(head_dim):
    from keras_dropneuron.layer_rules.keras_hub_blocks import HeadSizedTransformerDecoder

    with pytest.raises(ValueError, match="head_dim"):
        HeadSizedTransformerDecoder(intermediate_dim=WIDTH, num_heads=4, head_dim=head_dim)


def test_decoder_with_cross_attention_keeps_its_heads():
    # `num_heads` also sets the cross-attention's heads, which would change.
    decoder_in = keras.Input((LENGTH, HIDDEN))
    encoder_in = keras.Input((LENGTH, HIDDEN))
    block = keras_hub.layers.TransformerDecoder(intermediate_dim=WIDTH, num_heads=4, name="dec")
    model = keras.Model([decoder_in, encoder_in], block(decoder_in, encoder_in))
    _zero_heads(block, value_groups=[0, 1])
    down = block._feedforward_output_dense.kernel
    kernel = to_numpy(down).copy()
    kernel[:10] = 0  # 10 dead feed-forward units, so that the block is re-created
    down.assign(kernel)
    assert "cross-attention" in rule_for(block).heads_kept_reason(block)
    rng = np.random.default_rng(0)
    data = [rng.standard_normal((2, LENGTH, HIDDEN)).astype("float32") for _ in range(2)]
    slim = slim_model(model, widths="per_layer")
    new = slim.get_layer("dec")
    assert type(new) is keras_hub.layers.TransformerDecoder
    assert new._feedforward_output_dense.kernel.shape[0] == WIDTH - 10
    assert _heads(new) == (4, 4)
    np.testing.assert_allclose(to_numpy(slim(data)), to_numpy(model(data)), atol=2e-5)


def test_cli_reads_the_head_sized_files_it_writes(tmp_path):
    # `slim --widths per_layer` writes a HeadSizedTransformerEncoder; `report` reads it back
    # in a new process that never imported keras-hub itself.
    import os
    import subprocess
    import sys

    model = _backbone("BertBackbone", 1)
    _zero_heads(_blocks(model)[0], output_heads=[1])
    model.save(tmp_path / "pruned.keras")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def cli(*args):
        command = [sys.executable, "-m", "keras_dropneuron.cli", *map(str, args)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    slim_path = tmp_path / "slim.keras"
    cli("slim", tmp_path / "pruned.keras", "-o", slim_path, "--widths", "per_layer")
    report = cli("report", slim_path, "--widths", "per_layer")
    assert "HeadSizedTransformerEncoder" in report
    loaded = keras.saving.load_model(slim_path)
    assert _heads(_blocks(loaded)[0]) == (3, 3)
