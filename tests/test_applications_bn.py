"""keras.applications ResNet50 and MobileNetV2 (random weights): BN groups end to end.

`regularize_model` joins each filter in front of BatchNormalization with BN's `gamma_j` and
`beta_j` (one incoming group). After a little training on random data (the BN moving
statistics are no longer 0 and 1), some groups are set to exactly zero (kernel column,
`gamma_j`, `beta_j`, and the bias when there is one), `prune_weights` in `"incoming"` mode
runs, and `slim_model` must compute what the pruned model computes and remove exactly the
zeroed filters that are provably removable:

- ResNet50: the first (1x1) and second (3x3) convolutions of a bottleneck block output a
  channel only their block reads, so every zeroed filter there goes. The third convolution
  writes into the residual stream (added to the shortcut), a channel set shared by every
  block of the stage: a filter zeroed there alone must stay.
- MobileNetV2: an expanded channel goes when its expand filter and its depthwise channel
  (kernel, `gamma_j`, `beta_j` of the depthwise BN) are both zero; the project
  convolution's filters feed the residual adds of later blocks and stay when zeroed alone.
"""

import keras
import numpy as np

from keras_dropneuron import prune_weights, regularize_model, slim_model

THRESHOLD = 1e-3


def _train_a_little(model, seed=0, steps=2):
    rng = np.random.default_rng(seed)
    x = rng.random((16 * steps, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=16 * steps)
    model.compile(keras.optimizers.SGD(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    return rng.random((8, 32, 32, 3), dtype=np.float32)


def _zero(model, name, bn_name, filters):
    """Zeroes the incoming group (kernel column, bias, BN's gamma and beta) of `filters`."""
    layer, bn = model.get_layer(name), model.get_layer(bn_name)
    values = keras.ops.convert_to_numpy(layer.kernel).copy()
    if isinstance(layer, keras.layers.DepthwiseConv2D):  # (h, w, channels, multiplier)
        values[..., filters, :] = 0
    else:
        values[..., filters] = 0
    layer.kernel.assign(values)
    variables = [bn.gamma, bn.beta] + (
        [layer.bias] if getattr(layer, "bias", None) is not None else []
    )
    for variable in variables:
        values = keras.ops.convert_to_numpy(variable).copy()
        values[filters] = 0
        variable.assign(values)


def _width(layer):
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return layer.kernel.shape[-2]
    return layer.kernel.shape[-1]


def _removed(model, slim, names):
    return {name: _width(model.get_layer(name)) - _width(slim.get_layer(name)) for name in names}


def _slim_and_compare(pruned, x):
    slim = slim_model(pruned, keep_regularizers=False)  # verifies itself too
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(slim(x)),
        keras.ops.convert_to_numpy(pruned(x)),
        atol=1e-5,
        rtol=1e-4,
    )
    return slim


def test_resnet50_zeroed_bottleneck_filters_are_removed():
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    penalized = regularize_model(model, li=1e-4)
    x = _train_a_little(penalized)
    expected, kept = {}, {}
    blocks = [
        layer.name[: -len("_1_conv")]
        for layer in penalized.layers
        if layer.name.endswith("_1_conv")
    ]
    for i, block in enumerate(blocks):
        for part, fraction in (("1", 0.25), ("2", 0.5)):
            name = f"{block}_{part}_conv"
            width = _width(penalized.get_layer(name))
            dead = list(range(i % 3, width, int(round(1 / fraction))))
            _zero(penalized, name, f"{block}_{part}_bn", dead)
            expected[name] = len(dead)
    # Residual stream: zeroed in one block's third convolution only, the shortcut and the
    # other blocks still write these channels: nothing may go.
    for name in ("conv2_block1_3", "conv3_block2_3"):
        _zero(penalized, f"{name}_conv", f"{name}_bn", [0, 1, 2, 3])
        kept[f"{name}_conv"] = 0
    prune_weights(penalized, THRESHOLD, mode="incoming")
    slim = _slim_and_compare(penalized, x)
    removed = _removed(penalized, slim, [*expected, *kept])
    print(
        f"\nResNet50 filters in front of BN zeroed: {sum(expected.values())} removable in "
        f"{len(expected)} layers, removed {sum(removed[n] for n in expected)}; "
        f"residual-stream filters zeroed 8, removed {sum(removed[n] for n in kept)}"
    )
    assert removed == {**expected, **kept}
    assert slim.count_params() < model.count_params()


def test_mobilenet_v2_zeroed_expanded_channels_are_removed():
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10
    )
    penalized = regularize_model(model, li=1e-4)
    x = _train_a_little(penalized)
    expected, kept = {}, {}
    blocks = [
        layer.name[: -len("_expand")]
        for layer in penalized.layers
        if layer.name.endswith("_expand")
    ]
    for i, block in enumerate(blocks):
        width = _width(penalized.get_layer(f"{block}_expand"))
        dead = list(range(i % 2, width, 3))
        _zero(penalized, f"{block}_expand", f"{block}_expand_BN", dead)
        _zero(penalized, f"{block}_depthwise", f"{block}_depthwise_BN", dead)
        expected[f"{block}_expand"] = expected[f"{block}_depthwise"] = len(dead)
    # Project filters of a block inside a residual chain (block_2 adds into block_1's
    # output, read again by block_3): zeroed alone they must stay.
    _zero(penalized, "block_2_project", "block_2_project_BN", [0, 1])
    kept["block_2_project"] = 0
    prune_weights(penalized, THRESHOLD, mode="incoming")
    slim = _slim_and_compare(penalized, x)
    removed = _removed(penalized, slim, [*expected, *kept])
    expand = sum(v for n, v in removed.items() if n.endswith("_expand"))
    depthwise = sum(v for n, v in removed.items() if n.endswith("_depthwise"))
    print(
        f"\nMobileNetV2 expanded channels zeroed: "
        f"{sum(v for n, v in expected.items() if n.endswith('_expand'))} in {len(blocks)} "
        f"blocks; removed expand {expand}, depthwise {depthwise}; project zeroed 2, "
        f"removed {removed['block_2_project']}"
    )
    assert removed == {**expected, **kept}
    assert slim.count_params() < model.count_params()
