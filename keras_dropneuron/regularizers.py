"""Group-lasso regularizers that drive whole neurons and filters to zero.

`LiRegularizer` penalises the incoming weights of each unit, `LoRegularizer` the
outgoing weights of each input unit, and `DropNeuronRegularizer` combines both
with L1 and L2 (the paper's eq. 10) because `kernel_regularizer=` takes one
object. `HeadRegularizer` penalises each head of a `MultiHeadAttention`.

Recurrent layers (`gates`): a hidden unit `j` of an LSTM (gates i, f, c, o),
GRU (z, r, h) or SimpleRNN (one block) owns column `b * units + j` of every
gate block `b` of `kernel (in, gates * units)` and `recurrent_kernel (units,
gates * units)`. With `gates=g` the weight's last axis is viewed as `(g,
units)` and the axes keep their meaning on the weight: `axis=-1` (Li) groups
the `g` columns of each unit, `axis=-2` (Lo) each row. A Keras regularizer sees
one variable, so a unit's incoming group is per variable: its Li penalty is
`||its kernel columns|| + ||its recurrent-kernel columns||` (one regularizer on
each argument), which is zero exactly when the unit's group spanning both
kernels is. Biases are not penalised: a unit whose kernel columns are all zero
still runs on its bias (its output is the same sequence for every input), so
`slim_model` removes it once nothing reads it either, its recurrent-kernel row
(Lo on `recurrent_regularizer`) and its consumers' rows being zero; penalise
`lo` as well as `li`.
"""

import math

import keras
from keras import ops

from keras_dropneuron import _backend, checks, supported_layers
from keras_dropneuron.layer_rules.base import attribute, gate_view

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


def _reduce_axes(shape, axis, name, gates):
    """Checks the unit axes `axis` against `shape`; the axes a norm sums on the gate view."""
    unit_axes = checks.check_axis_for(name, axis, shape)
    return gate_view(shape, unit_axes, gates)[2]


def _gate_shape(shape, gates):
    """`shape` with its last axis as `(gates, units)`; checks that it divides."""
    if gates > 1 and (not shape or shape[-1] % gates):
        raise ValueError(
            "Invalid value for argument `gates`: expected the last axis of the weight to "
            f"be a multiple of gates={gates} (gate blocks of `units` columns). Received: "
            f"gates={gates} for a weight of shape {tuple(shape)}"
        )
    return gate_view(shape, (), gates)[0]


def _size_factor(shape, reduce_axes, scale_by_group_size):
    return math.sqrt(math.prod(shape[a] for a in reduce_axes)) if scale_by_group_size else 1.0


def group_lasso(x, terms, scale_by_group_size=False, gates=1):
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
    """
    shape = tuple(x.shape)
    view = _gate_shape(shape, gates)
    plan = []
    for strength, axis, name in terms:
        reduce_axes = _reduce_axes(shape, axis, name, gates)
        plan.append((strength * _size_factor(view, reduce_axes, scale_by_group_size), reduce_axes))
    x = ops.cast(ops.convert_to_tensor(x), _compute_dtype(x))
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


def _with_l1_l2(x, losses, l1, l2):
    """The sum of `losses` and the L1 and squared L2 penalties of `x` (0 if none)."""
    if l1 or l2:
        w = ops.cast(x, _compute_dtype(x))
        if l1:
            losses.append(l1 * ops.sum(ops.abs(w)))
        if l2:
            losses.append(l2 * ops.sum(ops.square(w)))
    return sum(losses[1:], losses[0]) if losses else ops.zeros((), _compute_dtype(x))


class _GroupLasso(keras.regularizers.Regularizer):
    """Shared implementation of the single-term group-lasso regularizers."""

    _strength_name = ""
    _default_axis = -1

    def __init__(self, strength, axis, scale_by_group_size, gates):
        self.strength = checks.check_non_negative_float(self._strength_name, strength)
        self.axis = checks.check_axis("axis", axis)
        self.scale_by_group_size = checks.check_bool("scale_by_group_size", scale_by_group_size)
        self.gates = checks.check_int("gates", gates, 1)

    def __call__(self, x):
        terms = [(self.strength, self.axis, "axis")]
        return group_lasso(x, terms, self.scale_by_group_size, self.gates)

    def get_config(self):
        return {
            self._strength_name: self.strength,
            "axis": _axis_config(self.axis),
            "scale_by_group_size": self.scale_by_group_size,
            "gates": self.gates,
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
        gates: Number of gate blocks on the weight's last axis: `4` for an
            LSTM's `kernel` and `recurrent_kernel`, `3` for a GRU's, `1`
            otherwise (see the module docstring). Defaults to `1`.

    Raises:
        TypeError: If `li` is not a number, `axis` is not an int or ints or
            `gates` not an int.
        ValueError: If `li` is negative, NaN or infinite, `axis` names an
            axis twice or `gates < 1`. An `axis` beyond the rank of the weight
            it is attached to, or a last axis that is not a multiple of
            `gates`, can only be seen with the weight: it raises a `ValueError`
            naming the argument and the weight's shape when the penalty is
            computed.

    Example:

    >>> layer = keras.layers.Dense(64, kernel_regularizer=LiRegularizer(1e-4))
    >>> lstm = keras.layers.LSTM(32, recurrent_regularizer=LiRegularizer(1e-4, gates=4))
    """

    _strength_name = "li"

    def __init__(self, li=0.01, axis=-1, scale_by_group_size=False, gates=1):
        super().__init__(li, axis, scale_by_group_size, gates)

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
        gates: Gate blocks on the weight's last axis, as in `LiRegularizer`
            (a row's columns of every block form one group). Defaults to `1`.

    Raises:
        TypeError, ValueError: As `LiRegularizer`, for `lo`.

    Example:

    >>> layer = keras.layers.Conv2D(32, 3, kernel_regularizer=LoRegularizer(1e-4))
    """

    _strength_name = "lo"

    def __init__(self, lo=0.01, axis=-2, scale_by_group_size=False, gates=1):
        super().__init__(lo, axis, scale_by_group_size, gates)

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
        gates: Number of gate blocks on the weight's last axis: `4` for an
            LSTM's `kernel` and `recurrent_kernel`, `3` for a GRU's, `1`
            otherwise (see the module docstring). Defaults to `1`.

    Raises:
        TypeError: If a strength is not a number, an axis is not an int or
            ints or `gates` not an int.
        ValueError: If a strength is negative, NaN or infinite, an axis
            argument names an axis twice or `gates < 1`. Axes beyond the
            weight's rank, or a last axis that is not a multiple of `gates`,
            raise a `ValueError` naming the argument and the shape when the
            penalty is computed.

    Example:

    >>> reg = DropNeuronRegularizer(li=1e-4, lo=1e-4, l1=1e-5)
    >>> layer = keras.layers.Dense(300, kernel_regularizer=reg)
    >>> lstm_reg = DropNeuronRegularizer(li=1e-4, lo=1e-4, gates=4)
    >>> lstm = keras.layers.LSTM(
    ...     128, kernel_regularizer=lstm_reg, recurrent_regularizer=lstm_reg)
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
        gates=1,
    ):
        self.li = checks.check_non_negative_float("li", li)
        self.lo = checks.check_non_negative_float("lo", lo)
        self.l1 = checks.check_non_negative_float("l1", l1)
        self.l2 = checks.check_non_negative_float("l2", l2)
        self.li_axis = checks.check_axis("li_axis", li_axis)
        self.lo_axis = checks.check_axis("lo_axis", lo_axis)
        self.scale_by_group_size = checks.check_bool("scale_by_group_size", scale_by_group_size)
        self.gates = checks.check_int("gates", gates, 1)

    def __call__(self, x):
        _gate_shape(tuple(x.shape), self.gates)
        terms = [
            (strength, axis, name)
            for strength, axis, name in (
                (self.li, self.li_axis, "li_axis"),
                (self.lo, self.lo_axis, "lo_axis"),
            )
            if strength
        ]
        losses = [group_lasso(x, terms, self.scale_by_group_size, self.gates)] if terms else []
        return _with_l1_l2(x, losses, self.l1, self.l2)

    def get_config(self):
        return {
            "li": self.li,
            "lo": self.lo,
            "l1": self.l1,
            "l2": self.l2,
            "li_axis": _axis_config(self.li_axis),
            "lo_axis": _axis_config(self.lo_axis),
            "scale_by_group_size": self.scale_by_group_size,
            "gates": self.gates,
        }

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"DropNeuronRegularizer({args})"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class HeadRegularizer(keras.regularizers.Regularizer):
    """Group lasso on the heads of a `MultiHeadAttention` (plus L1 and L2).

    Head `h` owns the slices `[:, h, :]` of the query, key and value kernels
    `(dim, num_heads, key_dim or value_dim)` and the slice `[h]` of the output
    kernel `(num_heads, value_dim, *out)`. The layer passes its one
    `kernel_regularizer` to all four projections, so this regularizer finds the
    head axis of each kernel from its shape: heads on axis 1 for a projection
    `(d, num_heads, key_dim or value_dim)`, on axis 0 for the output kernel
    `(num_heads, value_dim, ...)`. Each kernel adds
    `heads * sum_h ||W_h|| + l1 * sum|W| + l2 * sum W**2`, so a head's penalty
    is the sum of the norms of its four slices (per variable, as a Keras
    regularizer sees one variable), zero exactly when all of them are. The
    bias rows of a head are not penalised (the layer's `bias_regularizer` is
    another argument); a head is removed by `slim_model` once its value or its
    output slice is zero, so its bias rows do not keep it alive when its
    output slice is zero.

    Args:
        heads: Strength of the per-head group lasso. Defaults to `0.01`.
        num_heads: The layer's `num_heads` (keyword only, required).
        key_dim: The layer's `key_dim` (keyword only, required).
        value_dim: The layer's `value_dim`. Defaults to `None`: `key_dim`.
        l1: Strength of the L1 penalty. Defaults to `0.0`.
        l2: Strength of the squared L2 penalty. Defaults to `0.0`.
        scale_by_group_size: Weight each head's norm by `sqrt(group size)`.
            Defaults to `False`.

    Raises:
        TypeError: If a strength is not a number or a size not an int.
        ValueError: If a strength is negative, NaN or infinite or a size is
            below 1. When the penalty is computed, for a kernel whose shape
            fits neither orientation, or both (the input width equal to
            `num_heads` and `value_dim`, say): the message names the shape.

    Example:

    >>> reg = HeadRegularizer(1e-3, num_heads=4, key_dim=16)
    >>> mha = keras.layers.MultiHeadAttention(4, 16, kernel_regularizer=reg)
    """

    def __init__(
        self,
        heads=0.01,
        *,
        num_heads,
        key_dim,
        value_dim=None,
        l1=0.0,
        l2=0.0,
        scale_by_group_size=False,
    ):
        self.heads = checks.check_non_negative_float("heads", heads)
        self.num_heads = checks.check_int("num_heads", num_heads, 1)
        self.key_dim = checks.check_int("key_dim", key_dim, 1)
        self.value_dim = None if value_dim is None else checks.check_int("value_dim", value_dim, 1)
        self.l1 = checks.check_non_negative_float("l1", l1)
        self.l2 = checks.check_non_negative_float("l2", l2)
        self.scale_by_group_size = checks.check_bool("scale_by_group_size", scale_by_group_size)

    def head_axis(self, shape):
        """The axis of a kernel of `shape` that indexes the heads (0 or 1)."""
        shape = tuple(shape)
        value_dim = self.value_dim or self.key_dim
        projection = (
            len(shape) == 3
            and shape[1] == self.num_heads
            and shape[2] in (self.key_dim, value_dim)
        )
        output = len(shape) >= 3 and shape[:2] == (self.num_heads, value_dim)
        if projection != output:
            return 1 if projection else 0
        kinds = "a query/key/value kernel (dim, num_heads, key_dim or value_dim)"
        kinds += " and" if projection else " nor"
        kinds += " an output kernel (num_heads, value_dim, ...)"
        raise ValueError(
            f"HeadRegularizer(num_heads={self.num_heads}, key_dim={self.key_dim}, "
            f"value_dim={value_dim}) cannot tell where the heads are in a kernel of shape "
            f"{shape}: it fits {'both' if projection else 'neither'} {kinds}. Check the "
            "sizes (the layer's own), or make the input width differ from `num_heads`."
        )

    def __call__(self, x):
        axis = (self.head_axis(x.shape),)
        terms = [(self.heads, axis, "heads")]
        losses = [group_lasso(x, terms, self.scale_by_group_size)] if self.heads else []
        return _with_l1_l2(x, losses, self.l1, self.l2)

    def get_config(self):
        return {
            "heads": self.heads,
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "l1": self.l1,
            "l2": self.l2,
            "scale_by_group_size": self.scale_by_group_size,
        }

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"HeadRegularizer({args})"


DROPNEURON_REGULARIZERS = (LiRegularizer, LoRegularizer, DropNeuronRegularizer, HeadRegularizer)


def has_dropneuron_regularizer(layer):
    """Whether any weight of `layer` listed in the layer table carries one of ours."""
    for layout in supported_layers.weight_layouts(layer):
        # The variable's own (a recurrent cell's, an attention projection's), else the layer's.
        variable = attribute(layer, layout.attribute)
        regularizer = getattr(variable, "regularizer", None) or getattr(
            layer, layout.regularizer_argument, None
        )
        if isinstance(regularizer, DROPNEURON_REGULARIZERS):
            return True
    return False
