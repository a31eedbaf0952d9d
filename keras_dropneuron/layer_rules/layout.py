"""`WeightLayout`: where the unit axes of a weight are, and the groups they make."""

import dataclasses

import numpy as np

from keras_dropneuron._group_lasso import gate_view


@dataclasses.dataclass(frozen=True)
class WeightLayout:
    """Where the unit axes of one weight tensor are.

    Attributes:
        attribute: Path of the layer attribute that holds the weight
            (`"kernel"`, `"cell.kernel"`; read it with `attribute()`).
        regularizer_argument: Constructor argument that regularizes it, or
            its path in the layer's config for a wrapped layer's weight
            (`"layer.config.kernel_regularizer"`: a `Bidirectional`'s forward
            layer).
        input_axes: Axes that index the layer's input units (channels).
        output_axes: Axes that index the layer's output units (filters).
        gates: Number of gate blocks on the last axis (`gates * units`
            columns, unit `j` owning column `b * units + j` of every block
            `b`): 4 for LSTM kernels, 3 for GRU, else 1. Groups are taken on
            the `gate_view` of the weight. Defaults to `1`.
        guard: Whether pruning must refuse to kill every output group of this
            weight at once (the layer would compute a constant). `False` where
            the layer works on without them (a recurrent kernel, attention
            queries and keys). Defaults to `True`.

    Example:

    >>> WeightLayout("kernel", "kernel_regularizer", input_axes=(-2,), output_axes=(-1,))
    """

    attribute: str
    regularizer_argument: str
    input_axes: tuple[int, ...]
    output_axes: tuple[int, ...]
    gates: int = 1
    guard: bool = True


def group_alive(weight: np.ndarray, unit_axes: tuple[int, ...], gates: int = 1) -> np.ndarray:
    """Boolean array over the units of `unit_axes`: True where the group has a non-zero."""
    view, _, reduce_axes = gate_view(weight.shape, unit_axes, gates)
    return np.any(np.reshape(weight, view) != 0, axis=reduce_axes)


def _axes_text(axes: tuple[int, ...]) -> str:
    return f"`{axes[0]}`" if len(axes) == 1 else f"`{tuple(axes)}`"


def describe_layouts(layouts: tuple[WeightLayout, ...]) -> str:
    """`layouts` in words for the supported-layers table, `"none"` when empty.

    Example:

    >>> describe_layouts((WeightLayout("kernel", "kernel_regularizer", (-2,), (-1,)),))
    '`kernel` (in `-2`, out `-1`)'
    """
    parts = []
    for layout in layouts:
        text = f"in {_axes_text(layout.input_axes)}, out {_axes_text(layout.output_axes)}"
        if layout.gates > 1:
            text += f", {layout.gates} gates"
        parts.append(f"`{layout.attribute}` ({text})")
    return "; ".join(parts) or "none"
