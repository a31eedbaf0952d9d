"""keras-hub models that round-trip `.keras` are never refused by `slim_model`.

Some keras-hub layers cannot be re-created from their own config, though the
models holding them save and load through their class's config; such a layer
kept whole is copied with its exact state from a copy of the whole model.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

keras_hub = pytest.importorskip("keras_hub")

from keras_dropneuron import slim_model  # noqa: E402
from keras_dropneuron.surgery import batches  # noqa: E402

MODELS = {
    "Llama3Backbone": dict(
        vocabulary_size=50, num_query_heads=4, num_key_value_heads=2, hidden_dim=32
    ),
    "Qwen3Backbone": dict(
        vocabulary_size=50, num_query_heads=4, num_key_value_heads=2, head_dim=8, hidden_dim=32
    ),
    "GPTNeoXBackbone": dict(
        vocabulary_size=50, num_heads=4, hidden_dim=32, max_sequence_length=16
    ),
    "ViTBackbone": dict(
        image_shape=(16, 16, 3), patch_size=4, num_heads=4, hidden_dim=32, mlp_dim=64
    ),
    "DeiTBackbone": dict(image_shape=(16, 16, 3), patch_size=4, num_heads=4, hidden_dim=32),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_with_broken_layer_configs_slim_exactly(name, tmp_path):
    arguments = dict(MODELS[name], num_layers=2)
    if name not in ("ViTBackbone",):
        arguments["intermediate_dim"] = 64
    model = getattr(keras_hub.models, name)(**arguments)
    slim = slim_model(model, widths="per_layer")  # each layer copied, none re-created whole
    data = batches.random_inputs(model)
    before = batches.packed(model, data)
    for a, b in zip(
        keras.tree.flatten(model(before)), keras.tree.flatten(slim(before)), strict=True
    ):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), atol=1e-5)
    same = slim_model(model)
    assert type(same) is type(model)
    same.save(tmp_path / "slim.keras")
    assert type(keras.saving.load_model(tmp_path / "slim.keras")) is type(model)


def test_tied_embedding_with_a_fixed_length_is_planned():
    # Embed 24 ids, then project back onto the 58-word vocabulary with the same table.
    ids = keras.Input((24,), dtype="int32")
    embedding = keras_hub.layers.ReversibleEmbedding(58, 16)
    hidden = keras.layers.Dense(16, activation="relu")(embedding(ids))
    model = keras.Model(ids, embedding(hidden, reverse=True))
    slim = slim_model(model)
    data = np.random.default_rng(0).integers(0, 58, (4, 24)).astype("int32")
    np.testing.assert_allclose(to_numpy(slim(data)), to_numpy(model(data)), atol=1e-5)
