"""The networks of the trained-start experiments: CNNs for 28x28x1 MNIST.

`resnet20` (ResNet-20, CIFAR variant) and `mobilenet_v2_small` (six inverted
residual blocks) carry BatchNormalization after every convolution;
`lenet_5_softmax` is the paper's LeNet-5 without it. Every one ends in a Dense
layer of 10 logits and a separate `Softmax` layer: the surgeon treats a Dense
with a softmax activation as a barrier (softmax mixes channels), which would
keep every unit feeding it, while a separate Softmax keeps the head Dense
prunable on its input side.

The networks are built unregularized and uncompiled:
`keras_dropneuron.experiments.trained_start` trains them without penalties,
then `prune_to_budget` prunes copies of them.
"""

import keras

L = keras.layers

# BatchNormalization's moving variance starts at 1 and follows a batch variance that is
# near 1e-5 in the deeper layers of these nets: at Keras's momentum 0.99 it takes about
# 1000 steps to get there (0.99**1000 = 4e-5), longer than a short MNIST training, and in
# inference mode the nets scored 10% (MobileNetV2) and 79% (ResNet-20) after 3 epochs on
# 10,000-20,000 images. At 0.9 the statistics follow within some 100 steps.
BN_MOMENTUM = 0.9

# (expansion, output channels, stride) of each inverted residual block.
MOBILENET_BLOCKS = ((1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 64, 1))


def _conv_bn(h, filters, kernel, strides, name, relu=True, max_value=None):
    """Conv (no bias) -> BatchNormalization (-> ReLU, or ReLU6 with `max_value=6`)."""
    h = L.Conv2D(filters, kernel, strides, padding="same", use_bias=False, name=f"{name}_conv")(h)
    h = L.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(h)
    return L.ReLU(max_value, name=f"{name}_relu")(h) if relu else h


def _head(h):
    """Dense of 10 logits, then a separate Softmax (the Dense stays prunable)."""
    return L.Softmax(name="softmax")(L.Dense(10, name="fc")(h))


def resnet20(
    input_shape: tuple[int, ...] = (28, 28, 1),
    widths: tuple[int, ...] = (16, 32, 64),
    blocks: int = 3,
) -> keras.Model:
    """ResNet-20 (He et al. 2016, CIFAR variant) adapted to 28x28x1 MNIST.

    A 3x3 Conv-BN-ReLU stem, 3 stages of `blocks` basic blocks (Conv-BN-ReLU,
    Conv-BN, add, ReLU) of 16, 32, 64 channels, stride 2 at the start of stages
    2 and 3 with a 1x1 Conv-BN projection shortcut, global average pooling,
    Dense 10 and a separate Softmax.

    Args:
        input_shape: Shape of one image. Defaults to `(28, 28, 1)`.
        widths: Channels of each stage. Defaults to `(16, 32, 64)`.
        blocks: Basic blocks per stage. Defaults to `3`.

    Returns:
        The uncompiled Functional model.

    Example:

    >>> model = resnet20()
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
    return keras.Model(x, _head(h), name="resnet20")


def mobilenet_v2_small(
    input_shape: tuple[int, ...] = (28, 28, 1),
    stem: int = 16,
    blocks: tuple[tuple[int, int, int], ...] = MOBILENET_BLOCKS,
    last: int = 128,
) -> keras.Model:
    """A small MobileNetV2 (Sandler et al. 2018) for 28x28x1 MNIST.

    A 3x3 Conv-BN-ReLU6 stem, inverted residual blocks (1x1 expand
    Conv-BN-ReLU6 unless the expansion is 1, 3x3 DepthwiseConv-BN-ReLU6, 1x1
    project Conv-BN, residual add when stride 1 and the widths match), a 1x1
    Conv-BN-ReLU6 of `last` channels, global average pooling, Dense 10 and a
    separate Softmax.

    Args:
        input_shape: Shape of one image. Defaults to `(28, 28, 1)`.
        stem: Channels of the stem. Defaults to `16`.
        blocks: `(expansion, output channels, stride)` of each block.
            Defaults to `MOBILENET_BLOCKS`.
        last: Channels of the last 1x1 convolution. Defaults to `128`.

    Returns:
        The uncompiled Functional model.

    Example:

    >>> model = mobilenet_v2_small()
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
    return keras.Model(x, _head(h), name="mobilenet_v2_small")


def lenet_5_softmax() -> keras.Model:
    """The paper's LeNet-5 (conv 32-64, fc 512) on 28x28x1 MNIST, with a separate Softmax.

    Returns:
        The uncompiled Sequential model: same-padded 5x5 convolutions of 32 and
        64 filters with ReLU, each followed by 2x2 max-pooling, `fc1` of 512
        ReLU units, `fc2` of 10 logits and a `Softmax` layer.

    Example:

    >>> model = lenet_5_softmax()
    """
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(32, 5, padding="same", activation="relu", name="conv1"),
            L.MaxPooling2D(2),
            L.Conv2D(64, 5, padding="same", activation="relu", name="conv2"),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(512, "relu", name="fc1"),
            L.Dense(10, name="fc2"),
            L.Softmax(name="softmax"),
        ],
        name="lenet_5",
    )
