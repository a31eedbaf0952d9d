"""Multiply-adds counted from layer shapes alone, independently of the layer rules.

Each formula is the textbook count of one call: a multiply-add per kernel
weight per output position. Layers without a kernel (activations,
normalization, pooling, merges) count 0. Only the layer classes the tests
build are known; any other layer with weights is an error, so a test cannot
count it as free by mistake.
"""

import math

import keras

from keras_dropneuron.experiments.setups.vit import PositionEmbedding

L = keras.layers

_GATES = {L.LSTM: 4, L.GRU: 3, L.SimpleRNN: 1}
_FREE = (
    L.InputLayer,
    L.Activation,
    L.BatchNormalization,
    L.LayerNormalization,
    L.Dropout,
    L.Flatten,
    L.Reshape,
    L.Add,
    L.Concatenate,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.MaxPooling2D,
    L.ReLU,
    L.Embedding,  # a table lookup: no multiply-adds
    PositionEmbedding,  # adds a learned vector
)


def _positions(shape):
    return math.prod(d for d in shape[1:-1])


def _recurrent(layer, tensor_in):
    steps, width = tensor_in.shape[1], tensor_in.shape[-1]
    return steps * (width + layer.units) * _GATES[type(layer)] * layer.units


def _attention(layer, query, value, key, out):
    """Projections, scores, weighted values and output, attending over all positions."""
    heads, key_dim = layer.num_heads, layer.key_dim
    value_dim = layer.value_dim or key_dim
    tq, tk = _positions(query.shape), _positions(key.shape)
    return (
        tq * query.shape[-1] * heads * key_dim  # query projection
        + tk * key.shape[-1] * heads * key_dim  # key projection
        + tk * value.shape[-1] * heads * value_dim  # value projection
        + heads * tq * tk * key_dim  # scores
        + heads * tq * tk * value_dim  # weighted sum of values
        + tq * heads * value_dim * out.shape[-1]  # output projection
    )


def layer_macs(layer, inputs, output):
    """Multiply-adds of one call of `layer` on `inputs` (a list) giving `output`."""
    if isinstance(layer, L.Dense):
        return _positions(output.shape) * inputs[0].shape[-1] * layer.units
    if isinstance(layer, (L.Conv1D, L.Conv2D)):
        taps = math.prod(layer.kernel_size)
        return (
            _positions(output.shape) * taps * inputs[0].shape[-1] // layer.groups * layer.filters
        )
    if isinstance(layer, L.Conv2DTranspose):
        taps = math.prod(layer.kernel_size)
        return _positions(inputs[0].shape) * taps * inputs[0].shape[-1] * layer.filters
    if isinstance(layer, L.DepthwiseConv2D):
        taps = math.prod(layer.kernel_size)
        return _positions(output.shape) * taps * output.shape[-1]
    if isinstance(layer, L.SeparableConv2D):
        middle = inputs[0].shape[-1] * layer.depth_multiplier
        taps = math.prod(layer.kernel_size)
        return _positions(output.shape) * middle * (taps + layer.filters)
    if type(layer) in _GATES:
        return _recurrent(layer, inputs[0])
    if isinstance(layer, L.Bidirectional):
        return _recurrent(layer.forward_layer, inputs[0]) + _recurrent(
            layer.backward_layer, inputs[0]
        )
    if isinstance(layer, L.MultiHeadAttention):
        query, value, key = (inputs + [None, None])[:3]
        value = query if value is None else value
        return _attention(layer, query, value, value if key is None else key, output)
    if isinstance(layer, _FREE) or not layer.weights:
        return 0
    raise TypeError(f"hand_macs does not know {type(layer).__name__}")


def model_macs(model):
    """Multiply-adds of one sample through a flat model, each layer called once.

    Layers called with several tensors must be called with positional
    arguments (`mha(query, value)`), so their inputs come in that order.
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            continue
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
        total += layer_macs(layer, inputs, layer.output)
    return total
