"""What the surgeon knows about each layer type.

Every call in the graph gets a *kind* that says how its channels couple:

- `dense`, `conv`, `conv_transpose`, `separable`: consume input channels and
  produce new output channels (the places where units are cut).
- `depthwise`: output channel `c * multiplier + m` belongs to input channel `c`.
- `embedding`: produces channels from integer ids (its input is not channels).
- `bn`, `prelu`, `pass`: per-channel layers, channel `c` in is channel `c` out.
- `merge`: all inputs and the output share one channel set.
- `concat`: output channel `offset_i + c` is channel `c` of input `i`.
- `flatten`: output channel `p * C + c` is input channel `c`.
- `barrier`: anything else; its channels are kept as they are.
"""

import numpy as np
from keras import layers, ops

from keras_dropneuron.supported_layers import weight_layouts

_PASS = (
    layers.Dropout,
    layers.SpatialDropout1D,
    layers.SpatialDropout2D,
    layers.SpatialDropout3D,
    layers.GaussianNoise,
    layers.GaussianDropout,
    layers.AlphaDropout,
    layers.ActivityRegularization,
    layers.Identity,
    layers.MaxPooling1D,
    layers.MaxPooling2D,
    layers.MaxPooling3D,
    layers.AveragePooling1D,
    layers.AveragePooling2D,
    layers.AveragePooling3D,
    layers.GlobalMaxPooling1D,
    layers.GlobalMaxPooling2D,
    layers.GlobalMaxPooling3D,
    layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling3D,
    layers.UpSampling1D,
    layers.UpSampling2D,
    layers.UpSampling3D,
    layers.Cropping1D,
    layers.Cropping2D,
    layers.Cropping3D,
    layers.ZeroPadding1D,
    layers.ZeroPadding2D,
    layers.ZeroPadding3D,
)
# Elementwise activation layers: the constant they output is f(constant).
_ELEMENTWISE = (layers.Activation, layers.ReLU, layers.LeakyReLU, layers.ELU)
_ZERO_PADDING = (layers.ZeroPadding1D, layers.ZeroPadding2D, layers.ZeroPadding3D)
_MERGE = (
    layers.Add,
    layers.Subtract,
    layers.Multiply,
    layers.Average,
    layers.Maximum,
    layers.Minimum,
)
# Activations that mix channels; a layer using one is a barrier on its output.
_CHANNEL_MIXING = {"softmax", "log_softmax", "glu", "sparsemax"}

WEIGHTED_KINDS = ("dense", "conv", "conv_transpose", "depthwise", "separable")
# Every weight each kind may hold. A layer holding any other weight (a
# quantization scale, a LoRA factor, a subclass's extra variable) is not
# understood and stays whole: slicing only what is known would change it.
KNOWN_WEIGHTS = {
    "dense": ("kernel", "bias"),
    "conv": ("kernel", "bias"),
    "conv_transpose": ("kernel", "bias"),
    "depthwise": ("kernel", "bias"),
    "separable": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "embedding": ("embeddings",),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "prelu": ("alpha",),
}
PRODUCER_KINDS = ("dense", "conv", "conv_transpose", "separable", "embedding")
CONSUMER_KINDS = ("dense", "conv", "conv_transpose", "separable")


def _elementwise_activation(fn):
    name = getattr(fn, "__name__", "")
    module = getattr(fn, "__module__", "") or ""
    return module.startswith("keras") and name not in _CHANNEL_MIXING


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


def _last_axis(layer, rank):
    axis = getattr(layer, "axis", -1)
    if isinstance(axis, list | tuple):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis in (-1, rank - 1)


def holds_only_known_weights(layer, kind):
    """Whether every weight of `layer` is one that `kind` knows how to slice."""
    known = {
        id(weight)
        for name in KNOWN_WEIGHTS.get(kind, ())
        if (weight := getattr(layer, name, None)) is not None
    }
    return all(id(weight) in known for weight in layer.weights)


def takes_training(layer):
    """Whether Keras passes the `training` flag to `layer`."""
    return "training" in getattr(layer, "_call_context_args", ())


def runs_in_training_mode(layer, training, leaked):
    """Whether a call may run in training mode when the model runs on data.

    Such a layer uses batch statistics or random masks, so the constant a dead
    unit takes is not carried through it. `training` is the call's explicit
    flag (`Call.training`). Keras hands an explicit `training=True` on to every
    layer called after it in the same model call (the call context), so once
    any call in the model sets it (`leaked`), every training-aware layer
    without its own `training=False` counts.
    """
    if not takes_training(layer):
        return False
    return training if training is not None else leaked


def classify_call(call, in_tensors, out_tensors, leaked=False):
    """Returns the kind of one `graph.Call`, `"barrier"` unless fully understood.

    A call is a barrier when the layer holds a weight its kind does not know,
    when its class overrides `call()` (a subclass computes something else
    with the same weights), or when it may run in training mode.
    """
    layer = call.layer
    kind = classify(layer, in_tensors, out_tensors)
    if kind == "barrier" or runs_in_training_mode(layer, call.training, leaked):
        return "barrier"
    if not computes_like_keras(layer) or not holds_only_known_weights(layer, kind):
        return "barrier"
    return kind


def computes_like_keras(layer):
    """Whether the `call()` that `layer` runs is the one of a Keras layer class."""
    module = getattr(type(layer).call, "__module__", "") or ""
    return module == "keras" or module.startswith("keras.")


def classify(layer, in_tensors, out_tensors):
    """Returns the kind of one layer from its type and shapes (see the module docstring)."""
    shapes_known = all(t.shape and t.shape[-1] is not None for t in in_tensors + out_tensors)
    if not isinstance(layer, layers.Layer) or not shapes_known:
        return "barrier"
    if not _channels_last(layer):
        return "barrier"
    layouts = weight_layouts(layer)
    if layouts:
        if isinstance(layer, layers.Embedding):
            return "embedding"
        if getattr(layer, "groups", 1) != 1:
            return "barrier"
        attribute = layouts[0].attribute
        if len(layouts) == 2:
            return "separable"
        if layouts[0].output_axes == (-2, -1):
            return "depthwise"
        if layouts[0].input_axes == (-1,) and attribute == "kernel":
            return "conv_transpose"
        return "dense" if isinstance(layer, layers.Dense) else "conv"
    rank = len(in_tensors[0].shape) if in_tensors else 0
    same_channels = len({t.shape[-1] for t in in_tensors + out_tensors}) == 1
    if isinstance(layer, layers.BatchNormalization):
        return "bn" if _last_axis(layer, rank) and same_channels else "barrier"
    if isinstance(layer, layers.PReLU):
        return "prelu" if same_channels else "barrier"
    if isinstance(layer, _ELEMENTWISE):
        fn = getattr(layer, "activation", None)
        if fn is not None and not _elementwise_activation(fn):
            return "barrier"
        return "pass" if same_channels else "barrier"
    if isinstance(layer, _PASS):
        return "pass" if same_channels else "barrier"
    if isinstance(layer, _MERGE):
        return "merge" if same_channels else "barrier"
    if isinstance(layer, layers.Concatenate):
        if _last_axis(layer, rank):
            return "concat"
        return "merge" if same_channels else "barrier"
    if isinstance(layer, layers.Flatten):
        static = all(d is not None for d in in_tensors[0].shape[1:])
        return "flatten" if static else "barrier"
    return "barrier"


def mixes_output_channels(layer):
    """Whether a weighted layer's activation (softmax, ...) mixes its output channels.

    Its input channels can still be cut like any other consumer's; its output
    channels cannot.
    """
    activation = getattr(layer, "activation", None)
    return activation is not None and not _elementwise_activation(activation)


def numpy(variable):
    """The value of a variable as a numpy array (`None` stays `None`)."""
    return None if variable is None else np.asarray(ops.convert_to_numpy(variable))


def activate(layer, values):
    """Applies `layer.activation` (if any) to a 1-D numpy array."""
    fn = getattr(layer, "activation", None)
    if fn is None:
        return values
    return np.asarray(ops.convert_to_numpy(fn(ops.convert_to_tensor(values))))


def bias_or_zeros(layer, size):
    """The bias of `layer`, or zeros of length `size` when it has none."""
    bias = numpy(getattr(layer, "bias", None)) if layer.use_bias else None
    return np.zeros(size, dtype=np.float64) if bias is None else bias


def spatial_axes(kernel):
    """The kernel axes that index positions, not channels."""
    return tuple(range(kernel.ndim - 2))


def is_one_by_one(layer):
    """Whether every kernel dimension of `layer` is 1 (padding is a no-op)."""
    return all(k == 1 for k in layer.kernel_size)


# ---------------------------------------------------------------- consumers


def outgoing_zero(layer, kind, threshold):
    """Per input channel: are all weights that read it within `threshold`?"""
    if kind in ("dense", "conv"):
        kernel = np.abs(numpy(layer.kernel))
        return np.all(
            np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1) <= threshold,
            axis=1,
        )
    if kind == "conv_transpose":
        kernel = np.abs(numpy(layer.kernel))
        return np.all(
            np.moveaxis(kernel, -1, 0).reshape(kernel.shape[-1], -1) <= threshold,
            axis=1,
        )
    if kind == "separable":
        depthwise = np.abs(numpy(layer.depthwise_kernel))
        channels, multiplier = depthwise.shape[-2:]
        pointwise = np.abs(numpy(layer.pointwise_kernel))
        pointwise = pointwise.reshape(channels, multiplier, -1)
        dead_depthwise = np.all(
            np.moveaxis(depthwise, -2, 0).reshape(channels, -1) <= threshold, axis=1
        )
        dead_pointwise = np.all(pointwise.reshape(channels, -1) <= threshold, axis=1)
        return dead_depthwise | dead_pointwise
    raise ValueError(kind)


def fold_is_exact(layer, kind):
    """Whether a constant input channel can be folded into the bias exactly.

    A padded convolution sees zeros instead of the constant near the border,
    so only `valid` padding (or a 1x1 kernel) is exact.
    """
    if kind == "dense":
        return True
    if kind in ("conv", "separable"):
        return layer.padding == "valid" or is_one_by_one(layer)
    return False


def fold_bias(layer, kind, constants):
    """Bias change of `layer` when input channels with `constants` are removed.

    `constants` has one entry per input channel (0 where nothing is folded).
    """
    if kind == "dense":
        return constants @ numpy(layer.kernel)
    if kind == "conv":
        kernel = numpy(layer.kernel).sum(axis=spatial_axes(layer.kernel))
        return constants @ kernel
    if kind == "conv_transpose":
        kernel = numpy(layer.kernel).sum(axis=spatial_axes(layer.kernel))
        return kernel @ constants
    if kind == "separable":
        depthwise = numpy(layer.depthwise_kernel)
        per_tap = depthwise.sum(axis=spatial_axes(depthwise)) * constants[:, None]
        pointwise = numpy(layer.pointwise_kernel)
        return per_tap.reshape(-1) @ pointwise.reshape(-1, pointwise.shape[-1])
    raise ValueError(kind)


# ---------------------------------------------------------------- producers


def output_constants(layer, kind, threshold, in_constants, approximate):
    """Per output channel: the constant value it always takes, else NaN."""
    if kind == "embedding":
        table = numpy(layer.embeddings)
        constant = np.all(table == table[:1], axis=0)
        return np.where(constant, table[0], np.nan)
    if kind == "depthwise":
        kernel = numpy(layer.kernel)
        channels, multiplier = kernel.shape[-2:]
        bias = bias_or_zeros(layer, channels * multiplier).reshape(channels, multiplier)
        dead = np.all(np.abs(kernel).reshape(-1, channels, multiplier) <= threshold, 0)
        taps = kernel.sum(axis=spatial_axes(kernel))
        inputs = in_constants[0][:, None]
        exact = approximate or layer.padding == "valid" or is_one_by_one(layer)
        foldable = ~np.isnan(inputs) & (exact | (inputs == 0))
        value = np.where(dead, bias, np.where(foldable, inputs * taps + bias, np.nan))
        return activate(layer, value.reshape(-1))
    if kind == "separable":
        kernel = numpy(layer.pointwise_kernel)
    else:
        kernel = numpy(layer.kernel)
    out_axis = -2 if kind == "conv_transpose" else -1
    flat = np.moveaxis(np.abs(kernel), out_axis, 0).reshape(kernel.shape[out_axis], -1)
    dead = np.all(flat <= threshold, axis=1)
    bias = bias_or_zeros(layer, kernel.shape[out_axis])
    return np.where(dead, activate(layer, bias), np.nan)


def per_channel_constants(layer, kind, in_constants):
    """Constants after a per-channel (`bn`, `prelu`, `pass`) layer."""
    x = in_constants[0]
    if kind == "bn":
        mean = numpy(layer.moving_mean)
        variance = numpy(layer.moving_variance)
        gamma = numpy(layer.gamma) if layer.scale else 1.0
        beta = numpy(layer.beta) if layer.center else 0.0
        return gamma * (x - mean) / np.sqrt(variance + layer.epsilon) + beta
    if kind == "prelu":
        # Negative values meet a per-position slope unless shared: be careful.
        return np.where(x >= 0, x, np.nan)
    if isinstance(layer, _ZERO_PADDING):
        return np.where(x == 0, x, np.nan)
    if isinstance(layer, _ELEMENTWISE):
        known = np.nan_to_num(x)
        out = np.asarray(ops.convert_to_numpy(layer(known[None].astype("float32"))))
        return np.where(np.isnan(x), np.nan, out[0])
    return x


def merge_constants(layer, in_constants):
    """Constants after a merge layer (NaN, i.e. unknown, propagates)."""
    stacked = np.stack(in_constants)
    if isinstance(layer, layers.Add):
        return stacked.sum(0)
    if isinstance(layer, layers.Subtract):
        return stacked[0] - stacked[1]
    if isinstance(layer, layers.Multiply):
        return stacked.prod(0)
    if isinstance(layer, layers.Average):
        return stacked.mean(0)
    if isinstance(layer, layers.Maximum):
        return stacked.max(0)
    if isinstance(layer, layers.Minimum):
        return stacked.min(0)
    # Concatenate along a non-channel axis: constant only where all agree.
    return np.where(np.all(stacked == stacked[:1], axis=0), stacked[0], np.nan)
