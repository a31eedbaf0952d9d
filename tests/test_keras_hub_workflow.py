"""The whole workflow on keras-hub models: penalties, budget, multiply-adds, slim.

Models from their constructors, nothing downloaded. keras-hub backbones take
sequences of any length, so a block's multiply-adds are counted per token (a
sequence of length 1); the hand formulas below say the same.
"""

import keras
import numpy as np
import pytest
from backend_utils import to_numpy
from test_keras_hub_ffn import HIDDEN, VOCAB, WIDTH, _backbone, _blocks

keras_hub = pytest.importorskip("keras_hub")

from keras_dropneuron import BudgetCallback, regularize_model, slim_model  # noqa: E402
from keras_dropneuron.regularizers import DropNeuronRegularizer  # noqa: E402
from keras_dropneuron.surgery.report import SlimReport  # noqa: E402


def _block_macs(model):
    return {
        row["name"]: row["macs_before"]
        for row in SlimReport.compare(model, model).rows
        if row["name"].startswith(("transformer_layer", "decoder_block"))
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # Multi-head attention: q, k, v, o projections 4 d^2, scores and values
        # 2 d (one key position), the network 2 d f.
        ("BertBackbone", 4 * HIDDEN**2 + 2 * HIDDEN + 2 * HIDDEN * WIDTH),
        ("GPT2Backbone", 4 * HIDDEN**2 + 2 * HIDDEN + 2 * HIDDEN * WIDTH),
        # Grouped-query: 4 query and 2 key/value heads of 8: q and o 2 d^2, k and v
        # 2 * d * 2 * 8; scores and values 2 * 4 * 8; gated network 3 d f.
        ("LlamaBackbone", 2 * HIDDEN**2 + 2 * HIDDEN * 16 + 2 * 32 + 3 * HIDDEN * WIDTH),
    ],
)
def test_block_multiply_adds_match_hand_formula(name, expected):
    macs = _block_macs(_backbone(name))
    assert list(macs.values()) == [expected, expected]


def _causal_lm():
    return keras_hub.models.GPT2CausalLM(backbone=_backbone("GPT2Backbone"), preprocessor=None)


def test_regularize_model_keeps_the_class_and_penalises_the_blocks():
    model = _causal_lm()
    regularized = regularize_model(model, li=1e-2, lo=3e-2)
    assert type(regularized) is type(model)
    block = _blocks(regularized.backbone)[0]
    up = block._feedforward_intermediate_dense.kernel
    down = block._feedforward_output_dense.kernel
    assert isinstance(up.regularizer, DropNeuronRegularizer)
    u, d = to_numpy(up), to_numpy(down)
    expected = 1e-2 * np.linalg.norm(u, axis=0).sum() + 3e-2 * np.linalg.norm(d, axis=1).sum()
    got = float(to_numpy(up.regularizer(up))) + float(to_numpy(down.regularizer(down)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # The penalties reach the training loss; the source model is untouched and equal.
    assert len(regularized.losses) > len(model.losses)
    assert _blocks(model.backbone)[0]._feedforward_intermediate_dense.kernel.regularizer is None
    for a, b in zip(model.get_weights(), regularized.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_budget_callback_on_a_causal_lm_meets_the_target():
    keras.utils.set_random_seed(3)
    model = regularize_model(_causal_lm(), li=2e-3, lo=2e-3)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (128, 12)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
    budget = BudgetCallback(target_macs=0.75)
    model.fit(x, np.roll(ids, -1, axis=1), epochs=4, batch_size=32, callbacks=[budget], verbose=0)
    assert budget.reached_epoch is not None
    slim = slim_model(model)
    assert type(slim) is type(model)
    before, after = sum(_block_macs(model).values()), sum(_block_macs(slim).values())
    # Per token: the network's share of each block is 2 d f of its 4 d^2 + 2 d + 2 d f.
    kept = slim.backbone.get_config()["intermediate_dim"]
    per_block = 4 * HIDDEN**2 + 2 * HIDDEN
    assert after == 2 * (per_block + 2 * HIDDEN * kept)
    assert after / before == pytest.approx(budget.ratios["macs"], abs=1e-9)
    assert budget.ratios["macs"] <= 0.75


@pytest.mark.slow
def test_prune_to_budget_takes_a_causal_lm_and_its_token_dict():
    from keras_dropneuron import prune_to_budget

    keras.utils.set_random_seed(0)
    model = _causal_lm()
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, (256, 12)).astype("int32")
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
    data = (x, np.roll(ids, -1, axis=1))
    slim, report = prune_to_budget(
        model,
        data,
        data,
        target_macs=0.7,
        li=2e-3,
        lo=2e-3,
        epochs=4,
        batch_size=32,
        max_accuracy_drop=1.0,
        optimizer=keras.optimizers.Adam(1e-2),
    )
    assert type(slim) is type(model)
    kept = slim.backbone.get_config()["intermediate_dim"]
    per_block = 4 * HIDDEN**2 + 2 * HIDDEN
    ratio = (per_block + 2 * HIDDEN * kept) / (per_block + 2 * HIDDEN * WIDTH)
    assert ratio <= 0.7
    assert report.ratios["macs"] == pytest.approx(ratio)
