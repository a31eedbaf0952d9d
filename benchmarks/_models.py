"""The benchmark models, unregularized, and helpers that kill units by editing weights."""

import keras
import numpy as np

# The BatchNormalization CNNs live in the library, with the experiments that prune them.
from keras_dropneuron.experiments.setups.bn_cnn import (  # noqa: F401
    BN_MOMENTUM,
    MOBILENET_BLOCKS,
    lenet_5_softmax,
    mobilenet_v2_small,
    resnet20,
)

L = keras.layers


def _head(name, softmax_layer):
    # The surgeon treats a Dense with a softmax activation as a barrier (softmax mixes
    # channels), which would also keep every unit feeding it; a separate Softmax layer
    # keeps the head Dense prunable on its input side.
    if softmax_layer:
        return [L.Dense(10, name=name), L.Softmax(name="softmax")]
    return [L.Dense(10, "softmax", name=name)]


def lenet_300_100(hidden=(300, 100), softmax_layer=False):
    """LeNet-300-100 on flat MNIST, as in `keras_dropneuron.experiments.setups`."""
    return keras.Sequential(
        [
            keras.Input((784,)),
            L.Dense(hidden[0], "relu", name="fc1"),
            L.Dense(hidden[1], "relu", name="fc2"),
            *_head("fc3", softmax_layer),
        ],
        name="lenet_300_100",
    )


def lenet_5(softmax_layer=False):
    """The paper's LeNet-5 (conv 32-64, fc 512) on 28x28x1 MNIST."""
    model = lenet_5_softmax()
    if softmax_layer:
        return model
    # The same layers, the softmax folded into the last Dense.
    last = L.Dense(10, "softmax", name="fc2")
    return keras.Sequential([keras.Input((28, 28, 1)), *model.layers[:-2], last], name="lenet_5")


def resnet50(size=32):
    return keras.applications.ResNet50(
        weights=None, input_shape=(size, size, 3), classes=10, name="resnet50"
    )


BUILDERS = {"lenet-300-100": lenet_300_100, "lenet-5": lenet_5, "resnet50": resnet50}


def random_batch(model, batch_size, seed=0):
    """Random inputs and integer labels (10 classes) shaped for `model`."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, *model.input_shape[1:]), dtype=np.float32)
    y = rng.integers(0, 10, size=batch_size)
    return x, y


def with_kernel_regularizer(model, make_regularizer):
    """A copy of `model` (same weights) whose Dense/Conv kernels get `make_regularizer()`."""

    def clone(layer):
        config = layer.get_config()
        if "kernel_regularizer" in config:
            config["kernel_regularizer"] = keras.regularizers.serialize(make_regularizer())
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def kill_units(layer, fraction, rng, bn=None):
    """Makes `fraction` of `layer`'s output units dead: zero incoming weights and bias.

    With `bn` (the BatchNormalization after it) the dead channels are also made to output 0
    there (beta = moving mean = 0), as a trained DropNeuron model would have them after
    ReLU; the surgeon then removes them even before padded convolutions.

    Returns:
        The indices of the dead units.
    """
    units = layer.kernel.shape[-1]
    dead = rng.choice(units, size=int(round(fraction * units)), replace=False)
    kernel = layer.kernel.numpy()
    kernel[..., dead] = 0
    layer.kernel.assign(kernel)
    if layer.use_bias:
        bias = layer.bias.numpy()
        bias[dead] = 0
        layer.bias.assign(bias)
    if bn is not None:
        for variable in (bn.beta, bn.moving_mean):
            value = variable.numpy()
            value[dead] = 0
            variable.assign(value)
    return dead


def zero_inputs(layer, channels):
    """Zeroes the weights of `layer` that read input `channels` (its outgoing groups)."""
    kernel = layer.kernel.numpy()
    kernel[..., channels, :] = 0
    layer.kernel.assign(kernel)


def kill_bottleneck_filters(model, fraction):
    """Zeroes the first `fraction` of the filters (kernel and bias) of every ResNet
    bottleneck's first two convolutions (`*_1_conv`, `*_2_conv`)."""
    for layer in model.layers:
        if layer.name.endswith(("_1_conv", "_2_conv")):
            kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
            dead = int(kernel.shape[-1] * fraction)
            kernel[..., :dead] = 0
            bias[:dead] = 0
            layer.kernel.assign(kernel)
            layer.bias.assign(bias)
    return model
