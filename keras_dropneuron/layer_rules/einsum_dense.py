"""EinsumDense: units are removed where its equation is a Dense on the last axis."""

from keras import layers

from keras_dropneuron.layer_rules.base import Cut, Layer, Tensor, Tensors, Weights
from keras_dropneuron.layer_rules.dense import DenseRule
from keras_dropneuron.layer_rules.helpers import mixes_channels, spatial_size


def dense_like(equation: str, bias_axes: str | None) -> bool:
    """Whether `equation` multiplies the input's last axis by a `(in, out)` kernel.

    That is `"<rest><i>,<i><o>-><rest><o>"`: the kernel has two axes, the first
    contracted with the input's last, the second the output's last and new;
    every other axis (batch, sequence, `...`) passes in the same order. The
    bias, if any, runs along the output axis only.

    Example:

    >>> dense_like("abc,cd->abd", "d")
    True
    >>> dense_like("abc,cde->abde", None)  # heads: two output axes
    False
    """
    try:
        inputs, output = equation.replace(" ", "").split("->")
        source, kernel = inputs.split(",")
    except ValueError:
        return False
    if len(kernel) != 2:
        return False
    contracted, new = kernel
    return (
        source.endswith(contracted)
        and output.endswith(new)
        and contracted not in output
        and new not in source
        and source[:-1] == output[:-1]
        and bias_axes in (None, "", new)
    )


class EinsumDenseRule(DenseRule):
    """`EinsumDense` with a Dense-like equation (`"ab,bc->ac"`, `"abc,cd->abd"`).

    Its kernel is `(in, out)`, so it is pruned, regularized, folded, sliced
    and counted like `Dense`; `output_shape`'s last entry is its width. Any
    other equation (several output axes, heads, a bias on another axis) is
    kept whole.
    """

    types = (layers.EinsumDense,)
    width_argument = "output_shape"

    def barrier_reason(
        self, layer: Layer, in_tensors: Tensors, out_tensors: Tensors
    ) -> str | None:
        if not dense_like(layer.equation, layer.bias_axes):
            return f"equation {layer.equation!r} is not a Dense on the last axis"
        if mixes_channels(layer):
            return "activation mixes channels"
        return super().barrier_reason(layer, in_tensors, out_tensors)

    def macs(self, layer: Layer, tensor_in: Tensor, tensor_out: Tensor | None) -> int:
        # The input's positions: an `output_shape` of `(None, units)` leaves the output's unknown.
        kernel = layer.kernel.shape
        return spatial_size(tensor_in.shape) * int(kernel[0]) * int(kernel[1])

    def resize(self, layer: Layer, config: dict, cut: Cut) -> Weights:
        weights = self.slice(layer, cut.kept_in, cut.kept_out, cut.fold)
        shape = config["output_shape"]
        if isinstance(shape, int):
            config["output_shape"] = len(cut.kept_out)
        else:
            config["output_shape"] = [*shape[:-1], len(cut.kept_out)]
        return weights
