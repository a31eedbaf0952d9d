"""The benchmark models, unregularized, and helpers that kill units by editing weights."""

import keras
import numpy as np

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
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(32, 5, padding="same", activation="relu", name="conv1"),
            L.MaxPooling2D(2),
            L.Conv2D(64, 5, padding="same", activation="relu", name="conv2"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(512, "relu", name="fc1"),
            *_head("fc2", softmax_layer),
        ],
        name="lenet_5",
    )


def resnet50(size=32):
    return keras.applications.ResNet50(
        weights=None, input_shape=(size, size, 3), classes=10, name="resnet50"
    )


# BatchNormalization's moving variance starts at 1 and follows a batch variance that is
# near 1e-5 in the deeper layers of these nets: at Keras's momentum 0.99 it takes about 1000
# steps to get there (0.99**1000 = 4e-5), longer than a short MNIST training, and in
# inference mode the nets scored 10% (MobileNetV2) and 79% (ResNet-20) after 3 epochs on
# 10,000-20,000 images. At 0.9 the statistics follow within some 100 steps.
BN_MOMENTUM = 0.9


def _conv_bn(h, filters, kernel, strides, name, relu=True, max_value=None):
    """Conv (no bias) -> BatchNormalization (-> ReLU, or ReLU6 with `max_value=6`)."""
    h = L.Conv2D(filters, kernel, strides, padding="same", use_bias=False, name=f"{name}_conv")(h)
    h = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(h)
    return L.ReLU(max_value, name=f"{name}_relu")(h) if relu else h


def resnet20(input_shape=(28, 28, 1), widths=(16, 32, 64), blocks=3):
    """ResNet-20-like (He et al. 2016, CIFAR variant) for 28x28x1 MNIST.

    A 3x3 Conv-BN-ReLU stem, 3 stages of `blocks` basic blocks (Conv-BN-ReLU, Conv-BN, add,
    ReLU) of 16, 32, 64 channels, stride 2 at the start of stages 2 and 3 with a 1x1
    Conv-BN projection shortcut, global average pooling, Dense 10 and a separate Softmax.
    """
    x = keras.Input(input_shape)
    h = _conv_bn(x, widths[0], 3, 1, "stem")
    for stage, filters in enumerate(widths):
        for block in range(blocks):
            name = f"s{stage + 1}b{block + 1}"
            strides = 2 if stage and not block else 1
            shortcut = h
            if strides != 1 or h.shape[-1] != filters:
                shortcut = _conv_bn(h, filters, 1, strides, f"{name}_proj", relu=False)
            r = _conv_bn(h, filters, 3, strides, f"{name}_1")
            r = _conv_bn(r, filters, 3, 1, f"{name}_2", relu=False)
            h = L.ReLU(name=f"{name}_out")(L.Add(name=f"{name}_add")([shortcut, r]))
    h = L.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(x, _head_on(h), name="resnet20")


# (expansion, output channels, stride) of each inverted residual block.
MOBILENET_BLOCKS = ((1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 64, 1))


def mobilenet_v2_small(input_shape=(28, 28, 1), stem=16, blocks=MOBILENET_BLOCKS, last=128):
    """A small MobileNetV2 (Sandler et al. 2018) for 28x28x1 MNIST.

    A 3x3 Conv-BN-ReLU6 stem, inverted residual blocks (1x1 expand Conv-BN-ReLU6 unless the
    expansion is 1, 3x3 DepthwiseConv-BN-ReLU6, 1x1 project Conv-BN, residual add when
    stride 1 and the widths match), a 1x1 Conv-BN-ReLU6 of `last` channels, global average
    pooling, Dense 10 and a separate Softmax.
    """
    x = keras.Input(input_shape)
    h = _conv_bn(x, stem, 3, 1, "stem", max_value=6.0)
    for i, (expansion, filters, strides) in enumerate(blocks):
        name, inputs = f"b{i + 1}", h
        if expansion != 1:
            h = _conv_bn(h, expansion * inputs.shape[-1], 1, 1, f"{name}_expand", max_value=6.0)
        h = L.DepthwiseConv2D(3, strides, padding="same", use_bias=False, name=f"{name}_dw")(h)
        h = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(h)
        h = L.ReLU(6.0, name=f"{name}_dw_relu")(h)
        h = _conv_bn(h, filters, 1, 1, f"{name}_project", relu=False)
        if strides == 1 and inputs.shape[-1] == filters:
            h = L.Add(name=f"{name}_add")([inputs, h])
    h = _conv_bn(h, last, 1, 1, "last", max_value=6.0)
    h = L.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(x, _head_on(h), name="mobilenet_v2_small")


def _head_on(h):
    # A separate Softmax layer, as `_head(softmax_layer=True)`: the Dense stays prunable.
    return L.Softmax(name="softmax")(L.Dense(10, name="fc")(h))


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
