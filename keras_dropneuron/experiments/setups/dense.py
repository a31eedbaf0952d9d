"""The paper's Dense networks: sparse regression, the MNIST autoencoder, LeNet-300-100."""

import keras

from keras_dropneuron.experiments import data
from keras_dropneuron.experiments.setups.base import Setup, penalty

L = keras.layers


def build_sparse_regression(variant: str, penalties: dict) -> keras.Model:
    """The 20-5-1 regression network; `"baseline"` is dropout plus L1, as the paper's comparison.

    Args:
        variant: `"dropneuron"` or `"baseline"`.
        penalties: Strengths: `li`, `lo`, `baseline_l1`.

    Returns:
        The uncompiled model.
    """
    if variant == "baseline":
        l1 = penalties["baseline_l1"]
        return keras.Sequential(
            [
                keras.Input((20,)),
                L.Dropout(0.1),
                L.Dense(5, name="hidden", kernel_regularizer=penalty({"l1": l1})),
                L.Dense(1, name="output", kernel_regularizer=penalty({"l1": l1})),
            ],
            name="sparse_regression_baseline",
        )
    first = {"li": penalties["li"], "lo": penalties["lo"]}
    return keras.Sequential(
        [
            keras.Input((20,)),
            L.Dense(5, name="hidden", kernel_regularizer=penalty(first)),
            # Li on the output layer would drive the only output to zero.
            L.Dense(1, name="output", kernel_regularizer=penalty({"lo": penalties["lo"]})),
        ],
        name="sparse_regression",
    )


SPARSE_REGRESSION = Setup(
    name="sparse-regression",
    metric="nmse",
    build=build_sparse_regression,
    load=data.load_sparse_regression,
    loss="mse",
    epochs=100,
    batch_size=1,
    learning_rate=1e-3,
    threshold=1e-2,
    units=[("inputs", "hidden", "inputs"), ("hidden", "hidden", "units")],
    variants=("dropneuron", "baseline"),
    paper={
        "dropneuron": {"nmse": 3.6e-4, "compression": 35.0, "units": "2/20, 1/5"},
        "baseline": {"nmse": 0.54, "compression": 1.7, "units": "20/20, 5/5"},
    },
    steps_per_execution=100,
    penalties={"li": 0.1, "lo": 0.1, "baseline_l1": 0.01, "prox_li": 5.0, "prox_lo": 5.0},
)


def build_autoencoder(variant: str, penalties: dict) -> keras.Model:
    """The 784-128-64-128-784 sigmoid autoencoder.

    The pixels have their own Lo strength (`input_lo`): input pruning and
    hidden-unit pruning pull against the reconstruction error differently.
    So may each of the first two hidden layers' Li (`enc1_li`, `code_li`;
    `None` is `li`): enc1's units cost the most error.

    Args:
        variant: `"dropneuron"` (the only one).
        penalties: Strengths: `li`, `lo`, `input_lo`, `output_lo`, and
            optionally `enc1_li`, `code_li`.

    Returns:
        The uncompiled model.
    """
    strengths = {
        "enc1": {"li": penalties.get("enc1_li"), "lo": penalties["input_lo"]},
        "code": {"li": penalties.get("code_li"), "lo": penalties["lo"]},
        "dec1": {"li": None, "lo": penalties["lo"]},
    }
    layers = [keras.Input((784,))]
    for name, units in (("enc1", 128), ("code", 64), ("dec1", 128)):
        reg = strengths[name]
        reg["li"] = penalties["li"] if reg["li"] is None else reg["li"]
        layers.append(L.Dense(units, "sigmoid", name=name, kernel_regularizer=penalty(reg)))
    # No Li on the reconstruction layer: its incoming groups are the outputs.
    layers.append(
        L.Dense(
            784,
            "sigmoid",
            name="recon",
            kernel_regularizer=penalty({"lo": penalties["output_lo"]}),
        )
    )
    return keras.Sequential(layers, name="autoencoder")


AUTOENCODER = Setup(
    name="autoencoder",
    metric="mse",
    build=build_autoencoder,
    load=data.load_mnist_autoencoder,
    loss="mse",
    epochs=50,
    batch_size=256,
    learning_rate=1e-3,
    threshold=1e-2,
    units=[
        ("inputs", "enc1", "inputs"),
        ("enc1", "enc1", "units"),
        ("code", "code", "units"),
        ("dec1", "dec1", "units"),
    ],
    paper={"dropneuron": {"mse": 0.0121, "compression": 5.1, "units": "420-127-61-121"}},
    # 15 penalized epochs find the structure; the reconstruction error then
    # needs a long retraining at the full rate.
    finetune_epochs=35,
    finetune_lr_factor=1.0,
    penalties={
        "li": 2e-6,
        "lo": 2e-6,
        "input_lo": 1e-6,  # Lo on the pixels (enc1's rows)
        "output_lo": 2e-6,  # Lo on the reconstruction layer (dec1's units)
        "enc1_li": None,  # Li on enc1's units (None: li)
        "code_li": None,  # Li on the code units (None: li)
        "prox_li": 0.05,
        "prox_lo": 0.05,
    },
)


def build_lenet_300_100(variant: str, penalties: dict) -> keras.Model:
    """LeNet-300-100 on flat MNIST.

    Args:
        variant: `"dropneuron"` (the only one).
        penalties: Strengths: `li`, `lo`, and `input_lo`, the pixels' own Lo
            strength on fc1's rows (`None` is `lo`).

    Returns:
        The uncompiled model.
    """
    reg = {"li": penalties["li"], "lo": penalties["lo"]}
    input_lo = penalties.get("input_lo")
    first = {**reg, "lo": reg["lo"] if input_lo is None else input_lo}
    return keras.Sequential(
        [
            keras.Input((784,)),
            L.Dense(300, "relu", name="fc1", kernel_regularizer=penalty(first)),
            L.Dense(100, "relu", name="fc2", kernel_regularizer=penalty(reg)),
            L.Dense(10, "softmax", name="fc3", kernel_regularizer=penalty({"lo": reg["lo"]})),
        ],
        name="lenet_300_100",
    )


LENET_300_100 = Setup(
    name="lenet-300-100",
    metric="error",
    build=build_lenet_300_100,
    load=data.load_mnist_flat,
    loss="sparse_categorical_crossentropy",
    epochs=100,
    batch_size=256,
    learning_rate=1e-3,
    threshold=1e-2,
    units=[
        ("inputs", "fc1", "inputs"),
        ("fc1", "fc1", "units"),
        ("fc2", "fc2", "units"),
    ],
    paper={"dropneuron": {"error": 1.83, "compression": 10.1, "units": "542-83-61"}},
    finetune_epochs=10,
    # `prox_input_lo`: the proximal method's Lo on the pixels (None: prox_lo).
    penalties={
        "li": 4e-4,
        "lo": 4e-4,
        "input_lo": None,
        "prox_li": 0.5,
        "prox_lo": 0.5,
        "prox_input_lo": None,
    },
)
