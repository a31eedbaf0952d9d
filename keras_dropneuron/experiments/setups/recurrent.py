"""Sequential MNIST with an LSTM: the images read row by row, 28 steps of 28 pixels."""

import keras

from keras_dropneuron.experiments import data
from keras_dropneuron.experiments.setups.base import Setup, penalty

L = keras.layers


def build_sequential_mnist_lstm(variant: str, penalties: dict) -> keras.Model:
    """An LSTM of 128 units over the 28 image rows, then a softmax layer.

    Hidden unit `j` owns column `b * 128 + j` of each of the 4 gate blocks
    (`gates=4`): Li groups those columns, Lo the rows (an input pixel, or what
    the gates read back of a unit).

    Args:
        variant: `"dropneuron"` or `"unpenalized"` (no penalties).
        penalties: Strengths: `li`, `lo`, `input_lo` (Lo on the pixels).

    Returns:
        The uncompiled model.
    """
    penalized = variant != "unpenalized"
    kernel = {"li": penalties["li"], "lo": penalties["input_lo"], "gates": 4}
    recurrent = {"li": penalties["li"], "lo": penalties["lo"], "gates": 4}
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            L.LSTM(
                128,
                name="lstm",
                kernel_regularizer=penalty(kernel, penalized),
                recurrent_regularizer=penalty(recurrent, penalized),
            ),
            L.Dense(
                10,
                "softmax",
                name="output",
                kernel_regularizer=penalty({"lo": penalties["lo"]}, penalized),
            ),
        ],
        name="sequential_mnist_lstm",
    )


SEQUENTIAL_MNIST_LSTM = Setup(
    name="sequential-mnist-lstm",
    metric="error",
    build=build_sequential_mnist_lstm,
    load=data.load_mnist_sequences,
    loss="sparse_categorical_crossentropy",
    epochs=12,
    batch_size=128,
    learning_rate=2e-3,
    threshold=1e-2,
    units=[("input pixels", "lstm", "inputs"), ("hidden", "lstm", "units")],
    variants=("dropneuron", "unpenalized"),
    finetune_epochs=3,
    penalties={"li": 1.5e-3, "lo": 1.5e-3, "input_lo": 1e-3, "prox_li": 0.5, "prox_lo": 0.5},
    # The paper's single-weight pruning: whole-group pruning (prune_mode="neuron")
    # costs less accuracy here but leaves more hidden units alive.
)
