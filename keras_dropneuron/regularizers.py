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

from keras_dropneuron import checks
from keras_dropneuron._group_lasso import (
    Tensor,
    axis_config,
    check_gates,
    compute_dtype,
    group_lasso,
    with_l1_l2,
)

_PACKAGE = "keras_dropneuron"
_TINY_SQUARE = 1e-24  # a group norm below 1e-12 counts as dead in the gradient

# The unit axes of a weight: one axis, or several (a depthwise kernel's `(-2, -1)`).
Axes = int | tuple[int, ...] | list[int]


class _GroupLasso(keras.regularizers.Regularizer):
    """Shared implementation of the single-term group-lasso regularizers."""

    _strength_name = ""
    _default_axis = -1

    def __init__(self, strength: float, axis: Axes, scale_by_group_size: bool, gates: int) -> None:
        self.strength = checks.check_non_negative_float(self._strength_name, strength)
        self.axis = checks.check_axis("axis", axis)
        self.scale_by_group_size = checks.check_bool("scale_by_group_size", scale_by_group_size)
        self.gates = checks.check_int("gates", gates, 1)

    def __call__(self, x: Tensor) -> Tensor:
        terms = [(self.strength, self.axis, "axis")]
        return group_lasso(x, terms, self.scale_by_group_size, self.gates)

    def get_config(self) -> dict:
        return {
            self._strength_name: self.strength,
            "axis": axis_config(self.axis),
            "scale_by_group_size": self.scale_by_group_size,
            "gates": self.gates,
        }

    def __repr__(self) -> str:
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

    def __init__(
        self, li: float = 0.01, axis: Axes = -1, scale_by_group_size: bool = False, gates: int = 1
    ) -> None:
        super().__init__(li, axis, scale_by_group_size, gates)

    @property
    def li(self) -> float:
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

    def __init__(
        self, lo: float = 0.01, axis: Axes = -2, scale_by_group_size: bool = False, gates: int = 1
    ) -> None:
        super().__init__(lo, axis, scale_by_group_size, gates)

    @property
    def lo(self) -> float:
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
        li: float = 0.0,
        lo: float = 0.0,
        l1: float = 0.0,
        l2: float = 0.0,
        li_axis: Axes = -1,
        lo_axis: Axes = -2,
        scale_by_group_size: bool = False,
        gates: int = 1,
    ) -> None:
        self.li = checks.check_non_negative_float("li", li)
        self.lo = checks.check_non_negative_float("lo", lo)
        self.l1 = checks.check_non_negative_float("l1", l1)
        self.l2 = checks.check_non_negative_float("l2", l2)
        self.li_axis = checks.check_axis("li_axis", li_axis)
        self.lo_axis = checks.check_axis("lo_axis", lo_axis)
        self.scale_by_group_size = checks.check_bool("scale_by_group_size", scale_by_group_size)
        self.gates = checks.check_int("gates", gates, 1)

    def __call__(self, x: Tensor) -> Tensor:
        check_gates(tuple(x.shape), self.gates)
        terms = [
            (strength, axis, name)
            for strength, axis, name in (
                (self.li, self.li_axis, "li_axis"),
                (self.lo, self.lo_axis, "lo_axis"),
            )
            if strength
        ]
        losses = [group_lasso(x, terms, self.scale_by_group_size, self.gates)] if terms else []
        return with_l1_l2(x, losses, self.l1, self.l2)

    def get_config(self) -> dict:
        return {
            "li": self.li,
            "lo": self.lo,
            "l1": self.l1,
            "l2": self.l2,
            "li_axis": axis_config(self.li_axis),
            "lo_axis": axis_config(self.lo_axis),
            "scale_by_group_size": self.scale_by_group_size,
            "gates": self.gates,
        }

    def __repr__(self) -> str:
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
        heads: float = 0.01,
        *,
        num_heads: int,
        key_dim: int,
        value_dim: int | None = None,
        l1: float = 0.0,
        l2: float = 0.0,
        scale_by_group_size: bool = False,
    ) -> None:
        self.heads = checks.check_non_negative_float("heads", heads)
        self.num_heads = checks.check_int("num_heads", num_heads, 1)
        self.key_dim = checks.check_int("key_dim", key_dim, 1)
        self.value_dim = None if value_dim is None else checks.check_int("value_dim", value_dim, 1)
        self.l1 = checks.check_non_negative_float("l1", l1)
        self.l2 = checks.check_non_negative_float("l2", l2)
        self.scale_by_group_size = checks.check_bool("scale_by_group_size", scale_by_group_size)

    def head_axis(self, shape: tuple[int, ...]) -> int:
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

    def __call__(self, x: Tensor) -> Tensor:
        axis = (self.head_axis(x.shape),)
        terms = [(self.heads, axis, "heads")]
        losses = [group_lasso(x, terms, self.scale_by_group_size)] if self.heads else []
        return with_l1_l2(x, losses, self.l1, self.l2)

    def get_config(self) -> dict:
        return {
            "heads": self.heads,
            "num_heads": self.num_heads,
            "key_dim": self.key_dim,
            "value_dim": self.value_dim,
            "l1": self.l1,
            "l2": self.l2,
            "scale_by_group_size": self.scale_by_group_size,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"HeadRegularizer({args})"


class NormalizedUnitRegularizer(keras.regularizers.Regularizer):
    """Group lasso on units read by a BatchNormalization: kernel column, `gamma_j`, `beta_j`.

    On the kernel it is set on, `li * sum_j sqrt(||W[..., j]||^2 + gamma_j^2 +
    beta_j^2)`, plus `rest(W)` (the kernel's own DropNeuron penalty without its
    `li` part: `lo`, `l1`, `l2`). A dead group has a zero gradient. BN rescales
    a kernel column freely, so the column's norm alone does not tell a unit's
    importance; with `gamma_j` and `beta_j` in the group, the whole unit goes to
    zero together and its channel is exactly 0 after the normalization
    (`keras_dropneuron.normalized_units`).

    `regularize_model` sets it on the kernel variables of such units. It reads
    the normalization's variables on every call, so it holds them and has no
    config: a saved model keeps the kernel's own `DropNeuronRegularizer`.

    Args:
        li: Strength of the joint groups.
        partners: The normalization's `gamma` and `beta` variables (those it
            has), one entry per unit.
        li_axis: The unit axis of the kernel. Defaults to `-1`.
        rest: The rest of the kernel's penalty, or `None`.
        scale_by_group_size: Weight each norm by `sqrt(group size)`.
            Defaults to `False`.
    """

    def __init__(
        self,
        li: float,
        partners: list[keras.Variable],
        li_axis: int = -1,
        rest: keras.regularizers.Regularizer | None = None,
        scale_by_group_size: bool = False,
    ) -> None:
        self.li = checks.check_non_negative_float("li", li)
        self.partners = list(partners)
        self.li_axis = int(li_axis)  # set by `regularize_model` from the layer's layout
        self.rest = rest
        self.scale_by_group_size = checks.check_bool("scale_by_group_size", scale_by_group_size)

    def __call__(self, x: Tensor) -> Tensor:
        dtype = compute_dtype(x)
        axis = self.li_axis % len(x.shape)
        others = tuple(a for a in range(len(x.shape)) if a != axis)
        squares = ops.sum(ops.square(ops.cast(x, dtype)), axis=others)
        for partner in self.partners:
            squares = squares + ops.square(ops.cast(ops.convert_to_tensor(partner), dtype))
        size = math.prod(x.shape[a] for a in others) + len(self.partners)
        factor = self.li * (math.sqrt(size) if self.scale_by_group_size else 1.0)
        # Clipped below: a dead group (norm 0) gets a zero gradient, not 0 / 0.
        norms = ops.sqrt(ops.clip(squares, _TINY_SQUARE, math.inf))
        loss = factor * ops.sum(norms)
        return loss if self.rest is None else loss + self.rest(x)

    def get_config(self) -> dict:
        raise NotImplementedError(
            "NormalizedUnitRegularizer holds the normalization's variables and has no "
            "config; the layer's own `kernel_regularizer` is what a saved model keeps."
        )

    def __repr__(self) -> str:
        return (
            f"NormalizedUnitRegularizer(li={self.li!r}, partners={len(self.partners)}, "
            f"li_axis={self.li_axis!r}, rest={self.rest!r})"
        )


DROPNEURON_REGULARIZERS = (
    LiRegularizer,
    LoRegularizer,
    DropNeuronRegularizer,
    HeadRegularizer,
    NormalizedUnitRegularizer,
)
