"""The trained-start experiments: networks, training, pruning settings and bounds.

Each experiment is a `TrainedStart` in `EXPERIMENTS`, named `<network>-trained`.
Its network trains without penalties, then `prune_to_budget` prunes it to each
target (`keras_dropneuron.experiments.trained_start` runs them). The
convolutional networks are in `setups.bn_cnn`; the LSTM and the Vision
Transformer are the beyond-the-paper networks of `setups.recurrent` and
`setups.vit`, built without penalties.
"""

import dataclasses
from collections.abc import Callable

import keras

from keras_dropneuron.experiments import stdlib_packages
from keras_dropneuron.experiments.setups import bn_cnn, package_gru, recurrent, vit

PRETRAIN_BATCH = 128
PRETRAIN_LEARNING_RATE = 1e-3
# What every full experiment passes to `prune_to_budget` (its own settings override it);
# `learning_rate` is Adam's.
COMMON = {"growth": 1.2, "batch_size": 128, "threshold": 1e-2, "learning_rate": 1e-3}
# Adam moves each weight by about its learning rate per step whatever the penalty's size,
# so a BN group (gamma near 1) needs hundreds of steps to reach 0: small batches and a
# higher learning rate for the BN networks, a controller event every 80 batches, each
# raising the strength by `growth`; the weakest units are cut on the gradual schedule.
BN_PRUNE = {
    "epochs": 6,
    "finetune_epochs": 3,
    "li": 1e-3,
    "lo": 0.0,
    "batch_size": 64,
    "frequency": 80,
    "learning_rate": 2e-3,
    "schedule": "gradual",
}
LENET_PRUNE = {"epochs": 6, "finetune_epochs": 1, "li": 4e-4, "lo": 4e-4, "frequency": 25}
# The LSTM and the ViT: hidden units (every gate's column) and heads are cut on the
# gradual schedule, an event every 100 batches; the fine-tuning distils the trained
# model into the slim one.
SEQUENCE_PRUNE = {
    "epochs": 6,
    "finetune_epochs": 3,
    "li": 4e-4,
    "lo": 4e-4,
    "frequency": 100,
    "schedule": "gradual",
    "distill": True,
}
# The package GRU overfits its training files (86% on held-out snippets of them, 62% on
# the test files): shorter, gentler pruning and fine-tuning than the LSTM's, with the cut
# spread over events every 25 batches.
PACKAGE_PRUNE = {
    **SEQUENCE_PRUNE,
    "epochs": 3,
    "finetune_epochs": 2,
    "frequency": 25,
    "learning_rate": 5e-4,
}
# Published results, `{label: (fraction of the multiply-adds kept, accuracy change in points)}`.
ANCHORS = {"DepGraph: ResNet-50, ImageNet (76.10 -> 75.83%)": (1 / 2.0, -0.27)}

# Quick mode: a few hundred images, one epoch of training, a reachable target, strong
# settings (a high threshold, strong penalties, a controller event an epoch) and the
# accuracy check relaxed: a smoke test of the whole pipeline in seconds.
QUICK_TRAIN = 256
QUICK_VAL = 128
QUICK_TEST = 512
QUICK_TARGETS = (0.9,)
QUICK_PRUNE = {
    "epochs": 2,
    "finetune_epochs": 0,
    "li": 3e-2,
    "lo": 0.0,
    "frequency": "epoch",
    "max_accuracy_drop": 1.0,
    "growth": 2.0,
    "threshold": 0.5,
    "batch_size": 32,
    # A model trained for a few steps has no settled data loss to guard.
    "loss_guard": None,
}


@dataclasses.dataclass(frozen=True)
class TrainedStart:
    """One trained-start experiment: a network, its training and its pruning.

    Attributes:
        name: Command-line name.
        build: `build() -> keras.Model`, the uncompiled network (softmax output).
        targets: Fractions of the multiply-adds to keep, one `prune_to_budget`
            call each.
        bounds: `{target: points}`: the most accuracy points the slim model
            may lose at that target (also its `max_accuracy_drop`, as a
            fraction). A target without a bound gets half a point.
        prune: Keyword arguments of `prune_to_budget`, `learning_rate` being
            Adam's (the targets and `max_accuracy_drop` excepted).
        pretrain_epochs: Epochs of training without penalties. Defaults to `3`.
        pretrain_learning_rate: Adam's first learning rate in that training
            (it decays to 0). Defaults to `PRETRAIN_LEARNING_RATE`.
        train_size: Training examples, the first of the training set; `None`
            is all of them but the validation examples. Defaults to `20000`.
        val_size: Validation examples, the last of the training set.
            Defaults to `5000`.
        sequences: Whether the network reads an image as 28 rows of 28
            pixels, `(28, 28)`, rather than `(28, 28, 1)`. Defaults to `False`.
        load: `load() -> ((x, y), (x_test, y_test))`, the data when it is not
            MNIST (training data shuffled, since the validation data is its
            end); `None` is MNIST. Defaults to `None`.

    Example:

    >>> experiment = EXPERIMENTS["resnet20-trained"]
    >>> experiment.prune_arguments(0.5)["max_accuracy_drop"]
    0.002
    """

    name: str
    build: Callable[[], keras.Model]
    targets: tuple[float, ...]
    bounds: dict[float, float]
    prune: dict
    pretrain_epochs: int = 3
    pretrain_learning_rate: float = PRETRAIN_LEARNING_RATE
    train_size: int | None = 20000
    val_size: int = 5000
    sequences: bool = False
    load: Callable[[], tuple] | None = None

    def bound(self, target: float) -> float:
        """The most accuracy points the slim model may lose at `target`."""
        return self.bounds.get(target, 0.5)

    def prune_arguments(self, target: float, quick: bool = False) -> dict:
        """`prune_to_budget`'s keyword arguments at `target` (JSON values).

        Args:
            target: The fraction of the multiply-adds to keep.
            quick: Whether to use `QUICK_PRUNE`'s settings. Defaults to `False`.

        Returns:
            The arguments, `learning_rate` (Adam's) among them.
        """
        arguments = {**COMMON, **self.prune, "max_accuracy_drop": self.bound(target) / 100}
        if quick:
            arguments.update(QUICK_PRUNE)
        return arguments


def lstm() -> keras.Model:
    """The sequential-MNIST LSTM (128 hidden units) without penalties."""
    setup = recurrent.SEQUENTIAL_MNIST_LSTM
    return setup.build("unpenalized", setup.penalties)


def vision_transformer() -> keras.Model:
    """The MNIST Vision Transformer (4 blocks of 4 heads) without penalties."""
    setup = vit.MNIST_VIT
    return setup.build("unpenalized", setup.penalties)


EXPERIMENTS: dict[str, TrainedStart] = {
    e.name: e
    for e in (
        TrainedStart(
            "resnet20-trained", bn_cnn.resnet20, (0.5, 0.25), {0.5: 0.2, 0.25: 0.5}, BN_PRUNE
        ),
        TrainedStart(
            "mobilenetv2-trained", bn_cnn.mobilenet_v2_small, (0.5,), {0.5: 0.5}, BN_PRUNE
        ),
        TrainedStart("lenet-5-trained", bn_cnn.lenet_5_softmax, (0.25,), {0.25: 0.5}, LENET_PRUNE),
        # At most half of the 128 hidden units: 0.29 of the multiply-adds keeps at most 64
        # (the pixels kept by the LSTM count too), below the 0.4 asked.
        TrainedStart(
            "sequential-mnist-lstm-trained",
            lstm,
            (0.29,),
            {0.29: 0.3},
            SEQUENCE_PRUNE,
            pretrain_epochs=12,
            pretrain_learning_rate=2e-3,
            train_size=55000,
            sequences=True,
        ),
        TrainedStart(
            "mnist-vit-trained",
            vision_transformer,
            (0.5,),
            {0.5: 0.3},
            {**SEQUENCE_PRUNE, "learning_rate": 5e-4},
            pretrain_epochs=10,
            train_size=55000,
            sequences=True,
        ),
        # Stated before any pruning run: half the multiply-adds, at most one point lost
        # (the unpenalized GRU scores about 61% on the test files' snippets).
        TrainedStart(
            "package-gru-trained",
            package_gru.build_package_gru,
            (0.5,),
            {0.5: 1.0},
            PACKAGE_PRUNE,
            pretrain_epochs=4,
            pretrain_learning_rate=2e-3,
            train_size=None,
            val_size=2000,
            load=stdlib_packages.load_package_snippets,
        ),
    )
}


def check_name(name: str) -> TrainedStart:
    """Returns the trained-start experiment called `name`.

    Raises:
        ValueError: If there is none of that name.
    """
    if name not in EXPERIMENTS:
        raise ValueError(
            f"Invalid value for argument `name`: expected one of {sorted(EXPERIMENTS)}. "
            f"Received: name={name!r}"
        )
    return EXPERIMENTS[name]
