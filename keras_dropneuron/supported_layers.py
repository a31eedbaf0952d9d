"""The one table of layers whose weights DropNeuron regularizes and prunes.

Each supported layer type maps to its weight tensors. For every tensor the table
says which axes index an *input* unit (channel) and which index an *output* unit
(filter), following the layer's meaning rather than the raw storage order:

| layer | weight attribute | shape | input axes | output axes |
|---|---|---|---|---|
| Dense | `kernel` | `(in, out)` | `-2` | `-1` |
| Conv1D/2D/3D | `kernel` | `(*k, in, out)` | `-2` | `-1` |
| Conv1D/2D/3DTranspose | `kernel` | `(*k, out, in)` | `-1` | `-2` |
| DepthwiseConv1D/2D | `kernel` | `(*k, in, mult)` | `-2` | `(-2, -1)` |
| SeparableConv1D/2D | `depthwise_kernel` | `(*k, in, mult)` | `-2` | `(-2, -1)` |
| SeparableConv1D/2D | `pointwise_kernel` | `(*1, in * mult, out)` | `-2` | `-1` |
| Embedding | `embeddings` | `(vocab, dim)` | `-2` | `-1` |

A depthwise output channel is the pair `(input channel, multiplier)`, so its
incoming group is `kernel[..., i, m]` and the outgoing group of input channel `i`
is `kernel[..., i, :]`.
"""

import dataclasses

import keras


@dataclasses.dataclass(frozen=True)
class WeightLayout:
    """Where the unit axes of one weight tensor are.

    Attributes:
        attribute: Name of the layer attribute that holds the weight.
        regularizer_argument: Constructor argument that regularizes it.
        input_axes: Axes that index the layer's input units (channels).
        output_axes: Axes that index the layer's output units (filters).
    """

    attribute: str
    regularizer_argument: str
    input_axes: tuple[int, ...]
    output_axes: tuple[int, ...]


_DENSE_LIKE = WeightLayout("kernel", "kernel_regularizer", (-2,), (-1,))
_TRANSPOSED = WeightLayout("kernel", "kernel_regularizer", (-1,), (-2,))
_DEPTHWISE = WeightLayout("kernel", "depthwise_regularizer", (-2,), (-2, -1))

WEIGHT_LAYOUTS: dict[type, tuple[WeightLayout, ...]] = {
    keras.layers.Dense: (_DENSE_LIKE,),
    keras.layers.Conv1D: (_DENSE_LIKE,),
    keras.layers.Conv2D: (_DENSE_LIKE,),
    keras.layers.Conv3D: (_DENSE_LIKE,),
    keras.layers.Conv1DTranspose: (_TRANSPOSED,),
    keras.layers.Conv2DTranspose: (_TRANSPOSED,),
    keras.layers.Conv3DTranspose: (_TRANSPOSED,),
    keras.layers.DepthwiseConv1D: (_DEPTHWISE,),
    keras.layers.DepthwiseConv2D: (_DEPTHWISE,),
    keras.layers.SeparableConv1D: (
        dataclasses.replace(_DEPTHWISE, attribute="depthwise_kernel"),
        WeightLayout("pointwise_kernel", "pointwise_regularizer", (-2,), (-1,)),
    ),
    keras.layers.SeparableConv2D: (
        dataclasses.replace(_DEPTHWISE, attribute="depthwise_kernel"),
        WeightLayout("pointwise_kernel", "pointwise_regularizer", (-2,), (-1,)),
    ),
    keras.layers.Embedding: (WeightLayout("embeddings", "embeddings_regularizer", (-2,), (-1,)),),
}


def weight_layouts(layer):
    """Returns the `WeightLayout`s of `layer`, or `()` when it is not supported.

    The most specific registered class wins, so user subclasses of `Dense` and
    friends are handled like their parent.
    """
    for cls in type(layer).__mro__:
        if cls in WEIGHT_LAYOUTS:
            return WEIGHT_LAYOUTS[cls]
    return ()


def is_supported(layer):
    """Whether DropNeuron knows the weight layout of `layer`."""
    return bool(weight_layouts(layer))


def supported_layer_names():
    """Names of the supported layer classes, for error messages and docs."""
    return sorted(cls.__name__ for cls in WEIGHT_LAYOUTS)
