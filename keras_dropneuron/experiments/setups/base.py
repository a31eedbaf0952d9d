"""`Setup`, the description of one experiment, and the penalty helper its networks share."""

import dataclasses
from collections.abc import Callable

import keras
import numpy as np

from keras_dropneuron.regularizers import DropNeuronRegularizer

Arrays = tuple[np.ndarray, np.ndarray]
Loaded = tuple[Arrays, Arrays, dict]


@dataclasses.dataclass
class Setup:
    """One experiment: its network, data, training recipe and published figures.

    Attributes:
        name: Command-line name.
        metric: `"error"` (classification error, %) or `"nmse"` / `"mse"`.
        build: `build(variant, penalties) -> keras.Model`, compiled by the runner.
        load: `load(seed, mnist_path) -> ((x, y), (x_test, y_test), extra)`.
        loss: Keras loss.
        epochs: Training epochs, fine-tuning included.
        batch_size: Training batch size.
        learning_rate: Adam's learning rate.
        threshold: Pruning threshold (Dropping Principle 1).
        units: `(label, layer name, "inputs" | "units" | "heads")` to count
            alive units, in the paper's order.
        variants: Model variants (e.g. penalties on convolutions too).
            The variant `"unpenalized"` is the same recipe without penalties
            or pruning: the reference for the error gap. Defaults to
            `("dropneuron",)`.
        paper: The authors' figures per variant, for the side-by-side table.
            Defaults to `{}`.
        steps_per_execution: Batches per compiled call (speeds up batch 1).
            Defaults to `1`.
        finetune_epochs: Epochs of training without penalties after pruning,
            the pruned weights held at zero (0 in the paper). Defaults to `0`.
        finetune_lr_factor: Fine-tuning learning rate, as a fraction of
            `learning_rate`. Defaults to `0.1`.
        penalties: Penalty strengths (`li`, `lo`, per-experiment extras, and
            `prox_li` / `prox_lo` for the proximal method). Defaults to `{}`.
        prune_mode: `PruneCallback`'s mode: `"weight"` (the paper: single
            weights below the threshold) or `"neuron"` (whole groups only).
            Defaults to `"weight"`.
        keep_last_unit: `PruneCallback`'s `keep_last_unit`: a pruning event
            that would empty a layer keeps its strongest unit (residual
            blocks, where a dead sublayer only adds a constant). Defaults to
            `False`.

    Example:

    >>> from keras_dropneuron.experiments.setups import SETUPS
    >>> setup = SETUPS["lenet-300-100"]
    >>> model = setup.build("dropneuron", setup.penalties)
    """

    name: str
    metric: str
    build: Callable[[str, dict], keras.Model]
    load: Callable[[int, str | None], Loaded]
    loss: str
    epochs: int
    batch_size: int
    learning_rate: float
    threshold: float
    units: list[tuple[str, str, str]]
    variants: tuple[str, ...] = ("dropneuron",)
    paper: dict = dataclasses.field(default_factory=dict)
    steps_per_execution: int = 1
    finetune_epochs: int = 0
    finetune_lr_factor: float = 0.1
    penalties: dict = dataclasses.field(default_factory=dict)
    prune_mode: str = "weight"
    keep_last_unit: bool = False


def penalty(strengths: dict, enabled: bool = True) -> DropNeuronRegularizer | None:
    """A `DropNeuronRegularizer` of `strengths`, or `None` where `enabled` is false.

    Args:
        strengths: Keyword arguments of `DropNeuronRegularizer` (`li`, `lo`, ...).
        enabled: Whether the layer is penalized at all. Defaults to `True`.

    Returns:
        The regularizer, or `None`.

    Example:

    >>> penalty({"li": 1e-3, "lo": 1e-3})
    """
    return DropNeuronRegularizer(**strengths) if enabled else None
