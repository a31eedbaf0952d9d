"""Trained-start experiments of sequence models: the LSTM, the ViT and the package GRU.

Each runs in quick mode (a few hundred examples, one epoch, target 0.9); its
row is checked against the slim model it saved: the multiply-adds counted
from layer shapes alone (`hand_macs`), the accuracy recomputed with numpy's
argmax on the same test examples, and fewer hidden units or heads than the
original has.
"""

import keras
import numpy as np
import pytest
from conftest import MNIST
from hand_macs import model_macs

from keras_dropneuron.experiments import trained_setups, trained_start

L = keras.layers
# Experiment -> the layers whose units (heads) the cut may remove.
CUT_LAYERS = {
    "sequential-mnist-lstm-trained": ["lstm"],
    "mnist-vit-trained": [f"block{b}_{k}" for b in range(1, 5) for k in ("attention", "ff1")],
    "package-gru-trained": ["gru1", "gru2"],
}


def _units(layer):
    if isinstance(layer, L.MultiHeadAttention):
        return layer.num_heads
    if isinstance(layer, L.Bidirectional):
        return layer.forward_layer.units
    return layer.units


@pytest.mark.parametrize("name", sorted(CUT_LAYERS))
def test_quick_run_row_is_what_its_slim_model_does(name, tmp_path):
    experiment = trained_setups.EXPERIMENTS[name]
    if experiment.load is None and not MNIST.exists():
        pytest.skip(f"local MNIST file not found at {MNIST}")
    (row,) = trained_start.run_trained_start(name, quick=True, mnist=str(MNIST), out=tmp_path)
    assert row["status"] == "ok", row["status"]
    slim = keras.saving.load_model(row["slim_model"])
    original = experiment.build()
    ratio = model_macs(slim) / model_macs(original)
    assert row["mac_ratio"] == pytest.approx(ratio, rel=1e-9)
    assert ratio <= trained_setups.QUICK_TARGETS[0] + 1e-9
    before = sum(_units(original.get_layer(n)) for n in CUT_LAYERS[name])
    after = sum(_units(slim.get_layer(n)) for n in CUT_LAYERS[name])
    assert after < before
    _, _, (x_test, y_test) = trained_start.load_splits(experiment, True, str(MNIST))
    scores = np.asarray(slim.predict(x_test, verbose=0))
    accuracy = np.mean(np.argmax(scores, axis=1) == y_test)
    assert row["test_accuracy_after"] == pytest.approx(accuracy, abs=1e-12)
