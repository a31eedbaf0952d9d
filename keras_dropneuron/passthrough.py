"""Layers through which channel `c` of the input stays channel `c` of the output."""

import keras

L = keras.layers

# Element-wise or per-channel layers and spatial-only reshapes: they never mix
# channels, so a channel nobody reads after them is not read before them either.
CHANNEL_PASSTHROUGH = (
    L.Activation,
    L.ReLU,
    L.LeakyReLU,
    L.ELU,
    L.PReLU,
    L.Dropout,
    L.SpatialDropout1D,
    L.SpatialDropout2D,
    L.SpatialDropout3D,
    L.GaussianDropout,
    L.GaussianNoise,
    L.AlphaDropout,
    L.BatchNormalization,
    L.MaxPooling1D,
    L.MaxPooling2D,
    L.MaxPooling3D,
    L.AveragePooling1D,
    L.AveragePooling2D,
    L.AveragePooling3D,
    L.GlobalMaxPooling1D,
    L.GlobalMaxPooling2D,
    L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D,
    L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
    L.ZeroPadding1D,
    L.ZeroPadding2D,
    L.ZeroPadding3D,
    L.Cropping1D,
    L.Cropping2D,
    L.Cropping3D,
    L.UpSampling1D,
    L.UpSampling2D,
    L.UpSampling3D,
)


# Built-in activations that act on each element alone (not softmax).
ELEMENTWISE = {
    "linear",
    "relu",
    "relu6",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "sigmoid",
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "tanh",
    "softplus",
    "softsign",
    "leaky_relu",
    "mish",
    "exponential",
    "celu",
}


def is_channel_passthrough(layer):
    """Whether `layer` maps channel `c` to channel `c` (channels-last only)."""
    if not isinstance(layer, CHANNEL_PASSTHROUGH):
        return False
    if isinstance(layer, L.Activation) and layer.get_config().get("activation") not in ELEMENTWISE:
        return False  # softmax mixes channels; custom functions are unknown
    if isinstance(layer, L.BatchNormalization) and layer.axis not in (
        -1,
        len(layer.input.shape) - 1,
    ):
        return False
    data_format = getattr(layer, "data_format", "channels_last")
    return data_format in (None, "channels_last")


def is_flatten(layer):
    """Whether `layer` is a channels-last Flatten (channel `c` -> rows `p * C + c`)."""
    return isinstance(layer, L.Flatten) and layer.data_format in (None, "channels_last")
