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
| LSTM/GRU/SimpleRNN | `cell.kernel` | `(in, g * units)` | `-2` | `-1`, `gates=g` |
| LSTM/GRU/SimpleRNN | `cell.recurrent_kernel` | `(units, g * units)` | `-2` | `-1`, `gates=g` |
| Bidirectional(RNN) | `forward_layer.cell.kernel`, ... | as wrapped | `-2` | `-1`, `gates=g` |
| MultiHeadAttention | `query_dense.kernel` (key, value) | `(dim, heads, head_dim)` | `0` | `1` |
| MultiHeadAttention | `output_dense.kernel` | `(heads, value_dim, out)` | `-1` | `0` |

A depthwise output channel is the pair `(input channel, multiplier)`, so its
incoming group is `kernel[..., i, m]` and the outgoing group of input channel `i`
is `kernel[..., i, :]`.

A recurrent kernel's last axis holds `g` gate blocks (LSTM i, f, c, o: 4; GRU
z, r, h: 3; SimpleRNN: 1): hidden unit `j` is column `b * units + j` of every
block `b`, and its groups are taken on the view `(..., g, units)` (see
`layer_rules.base.gate_view`). A Bidirectional wrapper around LSTM, GRU or
SimpleRNN has the four kernels of its two directions, with paths
`forward_layer.cell.kernel`, `backward_layer.cell.recurrent_kernel`, ... and
each direction's gates; its regularizers go into the wrapped layers' configs
(`regularizer_argument` is a config path, `"layer.config.kernel_regularizer"`
or `"backward_layer.config.recurrent_regularizer"`), and its units are the
forward units followed by the backward units. `WEIGHT_LAYOUTS` lists the
classes whose layout the class alone fixes, so not Bidirectional.

An attention layer's units are its heads: a head's incoming groups are its
query, key and value slices `[:, h, :]`, its outgoing group the output
kernel's slice `[h]` (the output kernel's other side is the layer's output
channels).
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
    cls: rule.weights_of(cls) for rule in RULES for cls in rule.types if rule.weights_of(cls)
}


def weight_layouts(layer):
    """Returns the `WeightLayout`s of `layer`, or `()` when it is not supported.

    The most specific registered class wins, so user subclasses of `Dense` and
    friends are handled like their parent.
    """
    return rule_for(layer).layer_weights(layer)


def is_supported(layer):
    """Whether DropNeuron knows the weight layout of `layer`."""
    return bool(weight_layouts(layer))


def supported_layer_names():
    """Names of the supported layer classes, for error messages and docs."""
    wrappers = [cls for rule in RULES if rule.wraps for cls in rule.types]
    return sorted(cls.__name__ for cls in [*WEIGHT_LAYOUTS, *wrappers])
