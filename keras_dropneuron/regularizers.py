"""Group-lasso regularizers that drive whole neurons and filters to zero.

`LiRegularizer` penalises the incoming weights of each unit, `LoRegularizer` the
outgoing weights of each input unit, and `DropNeuronRegularizer` combines both
with L1 and L2 (the paper's eq. 10) because `kernel_regularizer=` takes one
object.
"""

import math

import keras
from keras import ops

from keras_dropneuron import _backend, checks, supported_layers

_PACKAGE = "keras_dropneuron"


# Below this a group norm is treated as tiny in the gradient (see `group_lasso`).
_TINY_NORM = 1e-12


def _axis_config(axes):
    # Flat, JSON-friendly config: a single axis stays an int.
    return axes[0] if len(axes) == 1 else list(axes)


def _compute_dtype(x):
    """float32, also for half-precision weights; float64 for float64 (on JAX: in x64 mode)."""
    if keras.backend.standardize_dtype(x.dtype) != "float64":
        return "float32"
    _backend.check_float64("A DropNeuron penalty")
    return "float64"


def _reduce_axes(x, axis, name):
    """Checks the unit axes `axis` against `x`; returns the other axes, which a norm sums."""
    unit_axes = checks.check_axis_for(name, axis, x.shape)
    return tuple(a for a in range(len(x.shape)) if a not in unit_axes)


def _size_factor(x, reduce_axes, scale_by_group_size):
    return math.sqrt(math.prod(x.shape[a] for a in reduce_axes)) if scale_by_group_size else 1.0


def group_lasso(x, terms, scale_by_group_size=False):
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

    Returns:
        A scalar, float32 (float64 for float64 input).

    Raises:
        ValueError: If an axis is out of range for `x`'s rank or two axes of a
            term name the same axis of `x`; the message names the argument and
            the shape.
    """
    plan = []
    for strength, axis, name in terms:
        reduce_axes = _reduce_axes(x, axis, name)
        plan.append((strength * _size_factor(x, reduce_axes, scale_by_group_size), reduce_axes))
    x = ops.cast(ops.convert_to_tensor(x), _compute_dtype(x))

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


class _GroupLasso(keras.regularizers.Regularizer):
    """Shared implementation of the single-term group-lasso regularizers."""

    _strength_name = ""
    _default_axis = -1

    def __init__(self, strength, axis, scale_by_group_size):
        self.strength = checks.check_non_negative_float(self._strength_name, strength)
        self.axis = checks.check_axis("axis", axis)
        self.scale_by_group_size = checks.check_bool("scale_by_group_size", scale_by_group_size)

    def __call__(self, x):
        return group_lasso(x, [(self.strength, self.axis, "axis")], self.scale_by_group_size)

    def get_config(self):
        return {
            self._strength_name: self.strength,
            "axis": _axis_config(self.axis),
            "scale_by_group_size": self.scale_by_group_size,
        }

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LiRegularizer(_GroupLasso):
    """Group lasso on the incoming weights of each unit (DropNeuron's Li).

    `loss = li * sum_j sqrt(sum_i W[i, j] ** 2)`: one group per output unit or
    filter `j` holding all of its incoming weights. For a Dense kernel `(in, out)`
    a group is a column; for a ConvND kernel `(*k, in, out)` it is `W[..., j]`.
    A unit whose group reaches zero receives nothing and emits the constant
    `act(bias)`.

    Args:
        li: Strength, a finite float >= 0. Defaults to `0.01`.
        axis: The axis (or axes) of the weight that index the output units.
            `-1` fits Dense, ConvND and Embedding; use `-2` for ConvNDTranspose
            (kernel `(*k, out, in)`) and `(-2, -1)` for depthwise kernels.
            `regularize_model` picks it for you. Defaults to `-1`.
        scale_by_group_size: Weight each group by `sqrt(group size)` as in
            Group Lasso. Defaults to `False`, as in the paper.

    Raises:
        TypeError: If `li` is not a number or `axis` is not an int or ints.
        ValueError: If `li` is negative, NaN or infinite, or `axis` names an
            axis twice. An `axis` beyond the rank of the weight it is attached
            to can only be seen with the weight: it raises a `ValueError`
            naming `axis` and the weight's shape when the penalty is computed.

    Example:

    >>> layer = keras.layers.Dense(64, kernel_regularizer=LiRegularizer(1e-4))
    """

    _strength_name = "li"

    def __init__(self, li=0.01, axis=-1, scale_by_group_size=False):
        super().__init__(li, axis, scale_by_group_size)

    @property
    def li(self):
        return self.strength


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LoRegularizer(_GroupLasso):
    """Group lasso on the outgoing weights of each input unit (DropNeuron's Lo).

    `loss = lo * sum_i sqrt(sum_j W[i, j] ** 2)`: one group per input unit or
    channel `i` holding all of its outgoing weights. For a Dense kernel a group is
    a row; for a ConvND kernel `(*k, in, out)` it is `W[..., i, :]`. An input unit
    whose group reaches zero sends nothing and can be removed.

    Args:
        lo: Strength, a finite float >= 0. Defaults to `0.01`.
        axis: The axis (or axes) of the weight that index the input units.
            `-2` fits Dense, ConvND, Embedding and depthwise kernels; use `-1`
            for ConvNDTranspose (kernel `(*k, out, in)`). Defaults to `-2`.
        scale_by_group_size: Weight each group by `sqrt(group size)` as in
            Group Lasso. Defaults to `False`, as in the paper.

    Raises:
        TypeError: If `lo` is not a number or `axis` is not an int or ints.
        ValueError: If `lo` is negative, NaN or infinite, or `axis` names an
            axis twice. An `axis` beyond the rank of the weight it is attached
            to can only be seen with the weight: it raises a `ValueError`
            naming `axis` and the weight's shape when the penalty is computed.

    Example:

    >>> layer = keras.layers.Conv2D(32, 3, kernel_regularizer=LoRegularizer(1e-4))
    """

    _strength_name = "lo"

    def __init__(self, lo=0.01, axis=-2, scale_by_group_size=False):
        super().__init__(lo, axis, scale_by_group_size)

    @property
    def lo(self):
        return self.strength


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DropNeuronRegularizer(keras.regularizers.Regularizer):
    """The paper's full penalty (eq. 10) in one regularizer.

    `loss = l1 * sum|W| + l2 * sum W**2 + li * Li(W) + lo * Lo(W)` where `Li`
    sums the norms of the incoming groups and `Lo` those of the outgoing groups
    (see `LiRegularizer` and `LoRegularizer`).

    Args:
        li: Strength of the incoming-group penalty. Defaults to `0.0`.
        lo: Strength of the outgoing-group penalty. Defaults to `0.0`.
        l1: Strength of the L1 penalty. Defaults to `0.0`.
        l2: Strength of the squared L2 penalty. Defaults to `0.0`.
        li_axis: Axis (or axes) indexing the output units. Defaults to `-1`.
        lo_axis: Axis (or axes) indexing the input units. Defaults to `-2`.
        scale_by_group_size: Weight each group by `sqrt(group size)`.
            Defaults to `False`.

    Raises:
        TypeError: If a strength is not a number or an axis is not an int or ints.
        ValueError: If a strength is negative, NaN or infinite, or an axis
            argument names an axis twice. Axes beyond the weight's rank raise a
            `ValueError` naming the argument and the shape when the penalty is
            computed.

    Example:

    >>> reg = DropNeuronRegularizer(li=1e-4, lo=1e-4, l1=1e-5)
    >>> layer = keras.layers.Dense(300, kernel_regularizer=reg)
    """

    def __init__(
        self,
        li=0.0,
        lo=0.0,
        l1=0.0,
        l2=0.0,
        li_axis=-1,
        lo_axis=-2,
        scale_by_group_size=False,
    ):
        self.li = checks.check_non_negative_float("li", li)
        self.lo = checks.check_non_negative_float("lo", lo)
        self.l1 = checks.check_non_negative_float("l1", l1)
        self.l2 = checks.check_non_negative_float("l2", l2)
        self.li_axis = checks.check_axis("li_axis", li_axis)
        self.lo_axis = checks.check_axis("lo_axis", lo_axis)
        self.scale_by_group_size = checks.check_bool("scale_by_group_size", scale_by_group_size)

    def __call__(self, x):
        terms = [
            (strength, axis, name)
            for strength, axis, name in (
                (self.li, self.li_axis, "li_axis"),
                (self.lo, self.lo_axis, "lo_axis"),
            )
            if strength
        ]
        losses = [group_lasso(x, terms, self.scale_by_group_size)] if terms else []
        if self.l1 or self.l2:
            w = ops.cast(x, _compute_dtype(x))
            if self.l1:
                losses.append(self.l1 * ops.sum(ops.abs(w)))
            if self.l2:
                losses.append(self.l2 * ops.sum(ops.square(w)))
        return sum(losses[1:], losses[0]) if losses else ops.zeros((), _compute_dtype(x))

    def get_config(self):
        return {
            "li": self.li,
            "lo": self.lo,
            "l1": self.l1,
            "l2": self.l2,
            "li_axis": _axis_config(self.li_axis),
            "lo_axis": _axis_config(self.lo_axis),
            "scale_by_group_size": self.scale_by_group_size,
        }

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"DropNeuronRegularizer({args})"


DROPNEURON_REGULARIZERS = (LiRegularizer, LoRegularizer, DropNeuronRegularizer)


def has_dropneuron_regularizer(layer):
    """Whether any weight of `layer` listed in the layer table carries one of ours."""
    return any(
        isinstance(getattr(layer, layout.regularizer_argument, None), DROPNEURON_REGULARIZERS)
        for layout in supported_layers.weight_layouts(layer)
    )
