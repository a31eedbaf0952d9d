"""The weights DropNeuron regularizes and prunes, per layer type.

A view of the registry of layer rules (`keras_dropneuron.layer_rules`): each
rule declares its weights and, for every weight, which axes index an *input*
unit (channel) and which an *output* unit (filter), following the layer's
meaning rather than the raw storage order:

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

from keras_dropneuron.layer_rules import RULES, WeightLayout, rule_for

__all__ = [
    "WEIGHT_LAYOUTS",
    "WeightLayout",
    "is_supported",
    "supported_layer_names",
    "weight_layouts",
]

WEIGHT_LAYOUTS: dict[type, tuple[WeightLayout, ...]] = {
    cls: rule.weights for rule in RULES if rule.weights for cls in rule.types
}


def weight_layouts(layer):
    """Returns the `WeightLayout`s of `layer`, or `()` when it is not supported.

    The most specific registered class wins, so user subclasses of `Dense` and
    friends are handled like their parent.
    """
    return rule_for(layer).weights


def is_supported(layer):
    """Whether DropNeuron knows the weight layout of `layer`."""
    return bool(weight_layouts(layer))


def supported_layer_names():
    """Names of the supported layer classes, for error messages and docs."""
    return sorted(cls.__name__ for cls in WEIGHT_LAYOUTS)
