"""keras-hub ViT: dead MLP units of the encoder's blocks are removed, exactly.

keras-hub's `ViTEncoder` holds its blocks in a list and builds them all from
one `mlp_dim`, so the slim encoder's `mlp_dim` is the largest count of alive
units any block has. Small randomly initialised models from their
constructors (nothing is downloaded); which units are dead is computed here
with numpy from the zeroed slices.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy

keras_hub = pytest.importorskip("keras_hub")

from keras_hub.src.models.vit.vit_layers import ViTEncoder  # noqa: E402

from keras_dropneuron import regularize_model, slim_model, sparsity_report  # noqa: E402
from keras_dropneuron.regularizers import DropNeuronRegularizer  # noqa: E402
from keras_dropneuron.surgery.report import SlimReport  # noqa: E402

IMAGE, PATCH, HIDDEN, HEADS, LAYERS, MLP = 16, 4, 16, 2, 2, 24
TOKENS = (IMAGE // PATCH) ** 2 + 1  # the patches and the class token


def _backbone():
    return keras_hub.models.ViTBackbone(
        image_shape=(IMAGE, IMAGE, 3),
        patch_size=PATCH,
        num_layers=LAYERS,
        num_heads=HEADS,
        hidden_dim=HIDDEN,
        mlp_dim=MLP,
    )


def _classifier():
    keras.utils.set_random_seed(0)
    return keras_hub.models.ViTImageClassifier(backbone=_backbone(), num_classes=3)


def _encoder(model):
    backbone = getattr(model, "backbone", model)
    return next(layer for layer in _all_layers(backbone) if isinstance(layer, ViTEncoder))


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _zero(dense, units, axis):
    value = to_numpy(dense.kernel).copy()
    if axis == 0:
        value[list(units)] = 0
    else:
        value[:, list(units)] = 0
    dense.kernel.assign(value)


def _make_dead(model):
    """Block 1: 10 dense_2 rows zero; block 2: 6 dense_1 columns zero (non-zero biases), 1 row.

    Returns the largest count of alive units over the blocks, from the weights.
    """
    first, second = _encoder(model).encoder_layers
    _zero(first.mlp.dense_2, range(10), 0)
    second.mlp.dense_1.bias.assign(np.linspace(-1, 1, MLP).astype("float32"))
    _zero(second.mlp.dense_1, range(5, 11), 1)
    _zero(second.mlp.dense_2, [20], 0)
    alive = []
    for block in (first, second):
        up, down = to_numpy(block.mlp.dense_1.kernel), to_numpy(block.mlp.dense_2.kernel)
        dead = np.all(up == 0, axis=0) | np.all(down == 0, axis=1)
        alive.append(int((~dead).sum()))
    assert alive == [14, 17]
    return max(alive)


def _images(batch=2):
    return np.random.default_rng(0).standard_normal((batch, IMAGE, IMAGE, 3)).astype("float32")


@pytest.mark.parametrize("widths", ["uniform", "per_layer"])
def test_dead_units_are_removed_exactly(widths):
    model = _classifier()
    expected = _make_dead(model)
    x = _images()
    before = to_numpy(model(x))
    slim = slim_model(model, widths=widths)
    encoder = _encoder(slim)
    assert encoder.mlp_dim == expected
    assert [b.mlp.dense_1.kernel.shape[1] for b in encoder.encoder_layers] == [expected] * 2
    if widths == "uniform":
        assert type(slim) is keras_hub.models.ViTImageClassifier
        assert slim.backbone.get_config()["mlp_dim"] == expected
    else:
        assert not isinstance(slim, keras_hub.models.ViTImageClassifier)
    # Each removed unit took its dense_1 column and bias and its dense_2 row.
    per_unit = HIDDEN + 1 + HIDDEN
    assert model.count_params() - slim.count_params() == LAYERS * (MLP - expected) * per_unit
    np.testing.assert_allclose(to_numpy(slim(x)), before, atol=2e-5)


def test_round_to_keeps_a_multiple_of_units():
    model = _classifier()
    expected = _make_dead(model)  # 17
    x = _images()
    slim = slim_model(model, widths="per_layer", round_to=8)
    assert _encoder(slim).mlp_dim == min(MLP, -(-expected // 8) * 8) == 24
    slim = slim_model(model, widths="per_layer", round_to=3)
    assert _encoder(slim).mlp_dim == 18
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=2e-5)


def test_slim_model_round_trips_keras_file(tmp_path):
    # Uniform widths only: in keras-hub 0.32 `ViTPatchingAndEmbedding.get_config()`
    # writes arguments its constructor refuses, so a Functional model holding it
    # cannot be loaded (the classifier's own class re-creates it from its config).
    model = _classifier()
    expected = _make_dead(model)
    slim = slim_model(model)
    path = tmp_path / "slim.keras"
    slim.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(slim)
    assert _encoder(loaded).mlp_dim == expected
    x = _images()
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(slim(x)), atol=1e-6)


def test_macs_of_the_encoder():
    model = _backbone()
    expected = _make_dead(model)
    slim = slim_model(model)
    row = next(r for r in SlimReport.compare(model, slim).rows if r["name"] == "vit_encoder")

    def block(width):
        # q, k, v and output projections 4 T d^2; per head scores and weighted
        # values against every token 2 T^2 d; the MLP 2 T d f.
        return 4 * TOKENS * HIDDEN**2 + 2 * TOKENS**2 * HIDDEN + 2 * TOKENS * HIDDEN * width

    assert row["macs_before"] == LAYERS * block(MLP)
    assert row["macs_after"] == LAYERS * block(expected)


def test_regularize_model_penalises_each_blocks_mlp_groups():
    model = _backbone()
    regularized = regularize_model(model, li=1e-2, lo=2e-2)
    for block in _encoder(regularized).encoder_layers:
        up, down = block.mlp.dense_1.kernel, block.mlp.dense_2.kernel
        assert isinstance(up.regularizer, DropNeuronRegularizer)
        assert isinstance(down.regularizer, DropNeuronRegularizer)
    block = _encoder(regularized).encoder_layers[1]
    up, down = block.mlp.dense_1.kernel, block.mlp.dense_2.kernel
    u, d = to_numpy(up), to_numpy(down)
    expected = 1e-2 * np.linalg.norm(u, axis=0).sum() + 2e-2 * np.linalg.norm(d, axis=1).sum()
    got = float(to_numpy(up.regularizer(up))) + float(to_numpy(down.regularizer(down)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The user's model is not touched.
    assert _encoder(model).encoder_layers[1].mlp.dense_1.kernel.regularizer is None


@pytest.mark.parametrize("widths", ["uniform", "per_layer"])
def test_sparsity_report_counts_the_units_of_all_blocks(widths):
    model = _backbone()
    expected = _make_dead(model)
    report = sparsity_report(model, widths=widths)
    row = {row["layer"]: row for row in report.to_list()}["vit_encoder"]
    assert row["units"] == LAYERS * MLP
    assert row["units_alive"] == 14 + 17
    # Every block at the encoder's one width, whichever `widths`.
    assert row["units_after_slim"] == LAYERS * expected
    assert report.totals["params_after_slim"] == slim_model(model, widths=widths).count_params()


def _encoder_model(cls):
    inputs = keras.Input((TOKENS, HIDDEN))
    encoder = cls(
        num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN, mlp_dim=MLP, name="encoder"
    )
    return keras.Model(inputs, encoder(inputs)), encoder


def test_encoder_with_an_extra_weight_is_kept_whole():
    class Scaled(ViTEncoder):
        def build(self, input_shape):
            super().build(input_shape)
            self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    model, encoder = _encoder_model(Scaled)
    _zero(encoder.encoder_layers[0].mlp.dense_2, range(12), 0)
    _zero(encoder.encoder_layers[1].mlp.dense_2, range(12), 0)
    slim, report = slim_model(model, return_report=True)
    assert slim.get_layer("encoder").mlp_dim == MLP
    assert "holds weights its rule does not know (scale)" in str(report)


def test_encoder_overriding_call_is_kept_whole():
    class Doubling(ViTEncoder):
        def call(self, inputs):
            return 2.0 * super().call(inputs)

    model, encoder = _encoder_model(Doubling)
    for block in encoder.encoder_layers:
        _zero(block.mlp.dense_2, range(12), 0)
    slim, report = slim_model(model, return_report=True)
    assert slim.get_layer("encoder").mlp_dim == MLP
    assert "Doubling overrides call()" in str(report)
    x = np.random.default_rng(0).standard_normal((2, TOKENS, HIDDEN)).astype("float32")
    np.testing.assert_allclose(to_numpy(slim(x)), to_numpy(model(x)), atol=2e-5)
