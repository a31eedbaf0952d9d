"""The group-lasso math behind the regularizers: group norms and a gradient safe at zero.

`keras_dropneuron.regularizers` is the public home of the regularizer classes;
this module holds what they compute with: `gate_view` (where a weight's unit
axes are once a recurrent kernel's gate blocks are split off), `group_lasso`
(the penalty with its hand-written gradient) and the L1/L2 terms.
"""

import math
from typing import Any

import keras
from keras import ops

from keras_dropneuron import _backend, checks

# A backend tensor or a `keras.Variable`: Keras has no one type for both.
Tensor = Any

# Below this a group norm is treated as tiny in the gradient (see `group_lasso`).
_TINY_NORM = 1e-12


def gate_view(
    shape: tuple[int, ...], axes: tuple[int, ...], gates: int = 1
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """A weight's shape with its last axis as `(gates, units)`, and `axes` on that view.

    Hidden unit `j` of a recurrent kernel `(..., gates * units)` is column
    `b * units + j` of every gate block `b`: on the view `(..., gates, units)`
    it is index `j` of the last axis. Axes keep their meaning on the weight
    (`-1` is the units, `-2` the rows); the gate axis is never a unit axis.

    Args:
        shape: The weight's shape.
        axes: Unit axes of the weight (negative allowed, in range).
        gates: Number of gate blocks. Defaults to `1` (the shape unchanged).

    Returns:
        `(view_shape, unit_axes, reduce_axes)`: the shape to reshape the weight
        to, the unit axes on it (non-negative) and the other axes, which a
        group's norm sums over.

    Example:

    >>> gate_view((3, 8), (-1,), gates=4)
    ((3, 4, 2), (2,), (0, 1))
    """
    rank = len(shape)
    axes = tuple(a % rank for a in axes)
    if gates > 1:
        shape = (*shape[:-1], gates, shape[-1] // gates)
        axes = tuple(rank if a == rank - 1 else a for a in axes)
        rank += 1
    return tuple(shape), axes, tuple(a for a in range(rank) if a not in axes)


def axis_config(axes: tuple[int, ...]) -> int | list[int]:
    """`axes` for a flat, JSON-friendly config: a single axis stays an int."""
    return axes[0] if len(axes) == 1 else list(axes)


def compute_dtype(x: Tensor) -> str:
    """float32, also for half-precision weights; float64 for float64 (on JAX: in x64 mode)."""
    if keras.backend.standardize_dtype(x.dtype) != "float64":
        return "float32"
    _backend.check_float64("A DropNeuron penalty")
    return "float64"


def check_gates(shape: tuple[int, ...], gates: int) -> tuple[int, ...]:
    """`shape` with its last axis as `(gates, units)`, after checking that it divides.

    Raises:
        ValueError: If the last axis of `shape` is not a multiple of `gates`.
    """
    if gates > 1 and (not shape or shape[-1] % gates):
        raise ValueError(
            "Invalid value for argument `gates`: expected the last axis of the weight to "
            f"be a multiple of gates={gates} (gate blocks of `units` columns). Received: "
            f"gates={gates} for a weight of shape {tuple(shape)}"
        )
    return gate_view(shape, (), gates)[0]


def _size_factor(shape, reduce_axes, scale_by_group_size):
    return math.sqrt(math.prod(shape[a] for a in reduce_axes)) if scale_by_group_size else 1.0


def group_lasso(
    x: Tensor,
    terms: list[tuple[float, tuple[int, ...], str]],
    scale_by_group_size: bool = False,
    gates: int = 1,
) -> Tensor:
    """`sum_k strength_k * sum_g ||w_g||` (groups per term) with a hand-written gradient.

    The gradient of `strength * ||w_g||` is `strength * w_g / ||w_g||`, and 0 for
    a dead group (where the norm has no derivative), so training stays NaN-free
    once groups die (below a norm of 1e-12 it is `strength * w_g / 1e-12`, of
    size below `strength`). Written by hand it is one broadcast and one multiply over
    the weight for all terms together; autodiff through `sqrt` and its guard
    takes several times as many ops, which on small models costs more in op
    dispatch than the arithmetic itself.

    Args:
        x: Weight tensor.
        terms: `(strength, axis, name)` triples: `axis` the unit axes of that
            term (checked by `checks.check_axis`), `name` the argument it came
            from, for the error when it does not fit `x`.
        scale_by_group_size: Weight each norm by `sqrt(group size)`.
            Defaults to `False`.
        gates: View the last axis of `x` as `(gates, units)` (a recurrent
            kernel's gate blocks); axes keep their meaning on `x`, so the unit
            axis `-1` groups unit `j`'s columns of every block. Defaults to `1`.

    Returns:
        A scalar, float32 (float64 for float64 input).

    Raises:
        ValueError: If an axis is out of range for `x`'s rank or two axes of a
            term name the same axis of `x`, or the last axis is not a multiple
            of `gates`; the message names the argument and the shape.

    Example:

    >>> group_lasso(kernel, [(1e-4, (-1,), "li_axis"), (1e-4, (-2,), "lo_axis")])
    """
    shape = tuple(x.shape)
    view = check_gates(shape, gates)
    plan = []
    for strength, axis, name in terms:
        unit_axes = checks.check_axis_for(name, axis, shape)
        reduce_axes = gate_view(shape, unit_axes, gates)[2]
        plan.append((strength * _size_factor(view, reduce_axes, scale_by_group_size), reduce_axes))
    x = ops.cast(ops.convert_to_tensor(x), compute_dtype(x))
    if gates > 1:
        x = ops.reshape(x, view)  # outside the custom gradient: autodiff reshapes back

    @ops.custom_gradient
    def penalty(w):
        squares = ops.square(w)
        # keepdims: each norm tensor broadcasts against `w` in the gradient.
        norms = [ops.sqrt(ops.sum(squares, axis=r, keepdims=True)) for _, r in plan]
        loss = None
        for (factor, _), n in zip(plan, norms, strict=True):
            term = factor * ops.sum(n)
            loss = term if loss is None else loss + term

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            # w_g / max(||w_g||, tiny): a dead group (norm 0) has w_g = 0, so its
            # gradient is exactly 0 without a test; a group with 0 < norm < tiny gets
            # a gradient of size below `factor` instead of dividing by ~0. Two ops
            # per term where `where` took four: on an eager backend (PyTorch) each
            # op is a dispatch, and they add up on small models.
            scale = None
            for (factor, _), n in zip(plan, norms, strict=True):
                # clip, not maximum: Keras's PyTorch maximum() computes float64 in float32.
                term = (factor * upstream) / ops.clip(n, _TINY_NORM, math.inf)
                scale = term if scale is None else scale + term
            return ops.multiply(w, scale)

        return loss, grad

    return penalty(x)


def with_l1_l2(x: Tensor, losses: list[Tensor], l1: float, l2: float) -> Tensor:
    """The sum of `losses` and the L1 and squared L2 penalties of `x` (0 if none)."""
    if l1 or l2:
        w = ops.cast(x, compute_dtype(x))
        if l1:
            losses.append(l1 * ops.sum(ops.abs(w)))
        if l2:
            losses.append(l2 * ops.sum(ops.square(w)))
    return sum(losses[1:], losses[0]) if losses else ops.zeros((), compute_dtype(x))
