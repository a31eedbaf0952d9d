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


def group_slice(layout: WeightLayout, side: str) -> str:
    """The slice of one group of `layout` in index notation, for the docs.

    Args:
        layout: The weight's layout.
        side: `"output"` for the incoming group of output unit `j` (its
            slice along `output_axes`), `"input"` for the outgoing group of
            input unit `i` (along `input_axes`).

    Returns:
        Text such as `` `kernel[..., j]` `` or `` `kernel[..., i, :]` ``, with
        `(every gate block)` for a gated weight.

    Example:

    >>> group_slice(WeightLayout("kernel", "kernel_regularizer", (-2,), (-1,)), "input")
    '`kernel[..., i, :]`'
    """
    axes = layout.output_axes if side == "output" else layout.input_axes
    names = dict(zip(axes, ("j",) if len(axes) == 1 else ("c", "m"), strict=False))
    if min(axes) < 0:
        index = ["...", *(names.get(a, ":") for a in range(min(axes), 0))]
    else:
        index = [names.get(a, ":") for a in range(max(axes) + 1)]
    text = f"`{layout.attribute}[{', '.join(index)}]`"
    if side == "input":
        text = text.replace("j", "i")
    return text + (" (every gate block)" if layout.gates > 1 else "")


def describe_groups(layouts: tuple[WeightLayout, ...], side: str) -> str:
    """The groups of `layouts` on one `side` (see `group_slice`), `"-"` for none."""
    return ", ".join(group_slice(layout, side) for layout in layouts) or "-"
