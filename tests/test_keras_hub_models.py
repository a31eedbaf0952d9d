"""A slim keras-hub model stays a keras-hub model: same class, uniform widths, exact.

Backbones and causal LMs built from their constructors (nothing downloaded),
with dead feed-forward units made by zeroing down-projection rows: block `i`
loses `10 + 4 * i` units, so the uniform width is the first block's count.
"""

import warnings

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from test_keras_hub_ffn import WIDTH, _backbone, _blocks, _inputs, _outputs, _zero

keras_hub = pytest.importorskip("keras_hub")

from keras_dropneuron import slim_model  # noqa: E402
from keras_dropneuron.layer_rules import rule_for  # noqa: E402
from keras_dropneuron.layer_rules.base import attribute  # noqa: E402


def _pruned(name, num_layers=2):
    model = _backbone(name, num_layers)
    for i, block in enumerate(_blocks(model)):
        _zero(block, rule_for(block).ffn.down, range(10 + 4 * i), 0)
    return model


def _units(model):
    return [attribute(b, f"{rule_for(b).ffn.up}.kernel").shape[1] for b in _blocks(model)]


@pytest.mark.parametrize("name", ["BertBackbone", "LlamaBackbone", "GemmaBackbone"])
def test_backbone_keeps_its_class_with_uniform_widths(name, tmp_path):
    model = _pruned(name)
    units = _units(model)[0]
    slim = slim_model(model)
    assert type(slim) is type(model)
    assert _units(slim) == [units - 10] * 2  # the largest count kept, in every block
    per_unit = 2 if name == "GemmaBackbone" else 1
    assert slim.get_config()["intermediate_dim"] == (units - 10) * per_unit
    data = _inputs(model)
    for a, b in zip(_outputs(model, data), _outputs(slim, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)
    slim.save(tmp_path / "slim.keras")
    loaded = keras.saving.load_model(tmp_path / "slim.keras")
    assert type(loaded) is type(model)
    for a, b in zip(_outputs(slim, data), _outputs(loaded, data), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6)


def test_per_layer_widths_give_a_functional_model():
    model = _pruned("GPT2Backbone")
    slim = slim_model(model, widths="per_layer")
    assert type(slim) is keras.Model or type(slim).__name__ == "Functional"
    assert _units(slim) == [WIDTH - 10, WIDTH - 14]


@pytest.mark.parametrize(
    ("backbone", "task"), [("GPT2Backbone", "GPT2CausalLM"), ("LlamaBackbone", "LlamaCausalLM")]
)
def test_causal_lm_generates_the_same_tokens(backbone, task):
    model = getattr(keras_hub.models, task)(backbone=_pruned(backbone), preprocessor=None)
    model.compile(sampler="greedy")
    slim = slim_model(model)
    assert type(slim) is type(model)
    assert slim.backbone.get_config()["intermediate_dim"] == WIDTH - 10
    prompt = {
        "token_ids": np.array([[5, 7, 9] + [0] * 9] * 2, "int32"),
        "padding_mask": np.array([[1, 1, 1] + [0] * 9] * 2, bool),
    }
    # The sampler the model was compiled with carries over (it is not in the config).
    assert type(slim.sampler) is type(model.sampler)
    before = model.generate(prompt, stop_token_ids=None)["token_ids"]
    after = slim.generate(prompt, stop_token_ids=None)["token_ids"]
    np.testing.assert_array_equal(after, before)


def test_preset_round_trip(tmp_path):
    slim = slim_model(_pruned("MistralBackbone"))
    slim.save_to_preset(str(tmp_path / "preset"))
    loaded = keras_hub.models.Backbone.from_preset(str(tmp_path / "preset"))
    assert type(loaded) is type(slim)
    assert _units(loaded) == _units(slim)
    data = _inputs(slim)
    for a, b in zip(_outputs(slim, data), _outputs(loaded, data), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6)


def test_bad_widths_is_refused():
    with pytest.raises(ValueError, match="widths"):
        slim_model(_pruned("BertBackbone", 1), widths="smallest")


def _classifier():
    backbone = _pruned("BertBackbone", num_layers=1)
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None)


def test_text_classifier_keeps_its_class_and_head():
    model = _classifier()
    slim = slim_model(model)
    assert type(slim) is type(model)
    assert type(slim.backbone) is type(model.backbone)
    data = _inputs(model.backbone)
    np.testing.assert_allclose(_outputs(slim, data)[0], _outputs(model, data)[0], atol=2e-5)


def test_a_layer_outside_the_blocks_losing_units_gives_a_functional_model():
    model = _classifier()
    # The head reads 10 fewer pooled units: pooled_dense, outside the blocks, loses them.
    logits = model.get_layer("logits").kernel
    value = to_numpy(logits).copy()
    value[:10] = 0
    logits.assign(value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        slim = slim_model(model)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any("Functional model" in m and "pooled_dense" in m for m in messages)
    assert type(slim) is not type(model)
    data = _inputs(model.backbone)
    np.testing.assert_allclose(_outputs(slim, data)[0], _outputs(model, data)[0], atol=2e-5)


def test_whisper_encoder_and_decoder_blocks_lose_units():
    # The decoder's call passes its padding mask first: its sequence is still found.
    model = keras_hub.models.WhisperBackbone(
        vocabulary_size=50,
        num_layers=1,
        num_heads=4,
        hidden_dim=32,
        intermediate_dim=WIDTH,
        num_mels=8,
        max_encoder_sequence_length=16,
        max_decoder_sequence_length=8,
    )
    blocks = _blocks(model)
    assert [type(b).__name__ for b in blocks] == ["WhisperEncoder", "WhisperDecoder"]
    for i, block in enumerate(blocks):
        _zero(block, "_feedforward_output_dense", range(10 + 4 * i), 0)
    slim = slim_model(model)
    assert type(slim) is type(model)
    assert _units(slim) == [WIDTH - 10] * 2
    rng = np.random.default_rng(0)
    data = {
        "encoder_features": rng.standard_normal((2, 16, 8)).astype("float32"),
        "decoder_token_ids": rng.integers(0, 50, (2, 8)).astype("int32"),
        "decoder_padding_mask": np.ones((2, 8), "int32"),
    }
    for a, b in zip(_outputs(model, data), _outputs(slim, data), strict=True):
        np.testing.assert_allclose(b, a, atol=2e-5)
