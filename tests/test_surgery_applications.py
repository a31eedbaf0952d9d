"""slim_model on keras.applications architectures (random weights)."""

import keras
import numpy as np
import pytest

from keras_dropneuron.surgery import slim_model

pytestmark = pytest.mark.slow


def conv_params(kernel, c_in, c_out, bias=True):
    return kernel * c_in * c_out + (c_out if bias else 0)


def check(model, slim, expected_params, assert_equivalent, before):
    assert slim.count_params() == expected_params
    assert_equivalent(model, slim)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_resnet50(assert_equivalent, kill):
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    rng = np.random.default_rng(0)
    # Filters of the first 1x1 conv of a block: constant BN(0) = 0 after ReLU,
    # read by a padded 3x3 conv (zero is exact there).
    kill.incoming(model.get_layer("conv2_block1_1_conv"), [0, 5, 9], bias=0.0)
    # Filters of the 3x3 conv: non-zero constant after BN/ReLU, folded into
    # the following 1x1 conv.
    bn = model.get_layer("conv2_block1_2_bn")
    bn.moving_mean.assign(rng.normal(-1, 0.5, 64).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 64).astype("float32"))
    kill.incoming(model.get_layer("conv2_block1_2_conv"), [1, 2], bias=0.3)
    before = [w.copy() for w in model.get_weights()]
    slim = slim_model(model)
    k1, k2 = 3, 2
    old = conv_params(1, 64, 64) + conv_params(9, 64, 64) + conv_params(1, 64, 256)
    new = (
        conv_params(1, 64, 64 - k1)
        + conv_params(9, 64 - k1, 64 - k2)
        + conv_params(1, 64 - k2, 256)
    )
    bn_removed = 4 * (k1 + k2)
    expected = model.count_params() - old + new - bn_removed
    check(model, slim, expected, assert_equivalent, before)


def test_mobilenet_v2(assert_equivalent, kill):
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
    dead = [3, 10, 50]
    kill.incoming(model.get_layer("block_2_expand"), dead)  # no bias: constant 0
    before = [w.copy() for w in model.get_weights()]
    slim = slim_model(model)
    k = len(dead)
    # expand 24->144, BN, depthwise 3x3, BN, project 144->24 (no biases).
    removed = k * 24 + 4 * k + 9 * k + 4 * k + k * 24
    check(model, slim, model.count_params() - removed, assert_equivalent, before)
    assert slim.get_layer("block_2_depthwise").kernel.shape == (3, 3, 141, 1)


def test_vgg16(assert_equivalent, kill):
    model = keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), classes=10)
    kill.incoming(model.get_layer("block5_conv3"), [1, 2, 3], bias=-1.0)  # relu -> 0
    kill.incoming(model.get_layer("fc1"), [5, 6], bias=0.2)  # folded into fc2
    before = [w.copy() for w in model.get_weights()]
    slim = slim_model(model)
    old = conv_params(9, 512, 512) + conv_params(1, 512, 4096)
    old += conv_params(1, 4096, 4096)
    new = conv_params(9, 512, 509) + conv_params(1, 509, 4094)
    new += conv_params(1, 4094, 4096)
    check(model, slim, model.count_params() - old + new, assert_equivalent, before)
