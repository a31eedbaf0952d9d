"""The convolutional networks: the paper's LeNet-5 and the records' Caffe LeNet-5."""

import keras

from keras_dropneuron.experiments import data
from keras_dropneuron.experiments.setups.base import Setup, penalty

L = keras.layers

# Both networks' units, in the records' order: conv1 filters - conv2 filters -
# fc1 inputs - fc1 units.
UNITS = [
    ("conv1 filters", "conv1", "units"),
    ("conv2 filters", "conv2", "units"),
    ("fc1 inputs", "fc1", "inputs"),
    ("fc1", "fc1", "units"),
]


def build_lenet_5(variant: str, penalties: dict) -> keras.Model:
    """The paper's LeNet-5: two same-padded convolutions (32, 64), fc1 of 512 units.

    Args:
        variant: `"dropneuron"` (penalties on the Dense layers) or
            `"dropneuron+conv"` (Li on the convolutions' filters too).
        penalties: Strengths: `li`, `lo`, `conv_li`.

    Returns:
        The uncompiled model.
    """
    reg = {"li": penalties["li"], "lo": penalties["lo"]}
    conv_reg = penalty({"li": penalties["conv_li"]}, variant == "dropneuron+conv")
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(
                32, 5, padding="same", activation="relu", name="conv1", kernel_regularizer=conv_reg
            ),
            L.MaxPooling2D(2),
            L.Conv2D(
                64, 5, padding="same", activation="relu", name="conv2", kernel_regularizer=conv_reg
            ),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(512, "relu", name="fc1", kernel_regularizer=penalty(reg)),
            L.Dense(10, "softmax", name="fc2", kernel_regularizer=penalty({"lo": reg["lo"]})),
        ],
        name="lenet_5",
    )


LENET_5 = Setup(
    name="lenet-5",
    metric="error",
    build=build_lenet_5,
    load=data.load_mnist_images,
    loss="sparse_categorical_crossentropy",
    epochs=8,
    batch_size=64,
    learning_rate=1e-3,
    threshold=1e-2,
    units=UNITS,
    variants=("dropneuron", "dropneuron+conv"),
    paper={"dropneuron": {"error": 0.86, "compression": 67.0, "units": "907/3136, 110/512"}},
    finetune_epochs=1,
    penalties={"li": 5e-4, "lo": 5e-4, "conv_li": 5e-4, "prox_li": 0.5, "prox_lo": 0.5},
)


def build_lenet_5_caffe(variant: str, penalties: dict) -> keras.Model:
    """Caffe's LeNet-5 (20-50-800-500, valid convolutions), the records' network.

    Li on every convolution kernel kills whole filters, Lo on conv2 the
    channels of conv1 it reads; fc1 has both (its rows are the 800 flattened
    features, its columns the 500 units), the output layer Lo only.

    Args:
        variant: `"dropneuron"` or `"unpenalized"` (no penalties).
        penalties: Strengths: `li`, `lo`, `conv_li`, `conv_lo`.

    Returns:
        The uncompiled model.
    """
    penalized = variant != "unpenalized"
    dense = {"li": penalties["li"], "lo": penalties["lo"]}
    conv1 = penalty({"li": penalties["conv_li"]}, penalized)
    conv2 = penalty({"li": penalties["conv_li"], "lo": penalties["conv_lo"]}, penalized)
    output = penalty({"lo": penalties["lo"]}, penalized)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(20, 5, activation="relu", name="conv1", kernel_regularizer=conv1),
            L.MaxPooling2D(2),
            L.Conv2D(50, 5, activation="relu", name="conv2", kernel_regularizer=conv2),
            L.MaxPooling2D(2),
            L.Flatten(),  # 4 x 4 x 50 = 800 features
            L.Dense(500, "relu", name="fc1", kernel_regularizer=penalty(dense, penalized)),
            L.Dense(10, "softmax", name="fc2", kernel_regularizer=output),
        ],
        name="lenet_5_caffe",
    )


# The DropNeuron paper has no figures for this network; the records are in
# `pareto.PUBLISHED`.
LENET_5_CAFFE = Setup(
    name="lenet-5-caffe",
    metric="error",
    build=build_lenet_5_caffe,
    load=data.load_mnist_images,
    loss="sparse_categorical_crossentropy",
    epochs=15,
    batch_size=128,
    learning_rate=1e-3,
    threshold=1e-2,
    units=UNITS,
    variants=("dropneuron", "unpenalized"),
    finetune_epochs=3,
    # Whole groups only: single weights below the threshold cost accuracy and
    # no size (the slim model is dense).
    prune_mode="neuron",
    penalties={
        "li": 1e-3,
        "lo": 1e-3,
        "conv_li": 1e-3,
        "conv_lo": 1e-3,
        "prox_li": 0.5,
        "prox_lo": 0.5,
    },
)
