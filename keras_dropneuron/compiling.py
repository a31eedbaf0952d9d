"""Compiling a copy (the penalized one, a regularized one) as the user's model is compiled.

The copy is compiled from the objects the model was compiled with (its loss
function, metrics, loss weights), not from its serialized compile config: a
custom loss or a lambda metric is then used as it is, with no registration
and no safe-mode refusal. Stateful objects (the optimizer, `Metric`
instances) are rebuilt from their configs, since each belongs to one model.
`cloning.clone_model` copies such a model: `keras.models.clone_model` alone
would compile the clone from the config, which names the unregistered loss.
"""

import warnings

import keras

from keras_dropneuron import keras_internals

# compile() arguments carried over from the model, besides the optimizer, loss and metrics.
_CARRIED = ("loss_weights", "run_eagerly", "steps_per_execution", "jit_compile")


def compile_like(
    copy: keras.Model,
    model: keras.Model,
    optimizer: object = None,
    loss: object = None,
) -> None:
    """Compiles `copy` as `model` is compiled, with `optimizer` and `loss` overriding.

    The model's optimizer gives a new one of the same class and config; its
    loss, loss weights and metric functions are reused; its `Metric`
    instances are rebuilt from their configs, and one that cannot be is left
    out with a warning.

    Args:
        copy: The model to compile.
        model: The model whose compilation `copy` follows; it may be
            uncompiled.
        optimizer: The optimizer to train `copy` with. Defaults to `None`: a
            new optimizer like the model's, else `"adam"`.
        loss: The loss to train `copy` with. Defaults to `None`: the model's.

    Raises:
        ValueError: If neither `loss` nor the model gives a loss, or the
            model's optimizer cannot be rebuilt and no `optimizer` is given.

    Example:

    >>> compile_like(copy, model, optimizer=keras.optimizers.Adam(1e-3))
    """
    settings = _compiled_with(model)
    if loss is None:
        loss = settings.get("loss")
    if loss is None:
        raise ValueError(
            "Invalid value for argument `loss`: the model is not compiled with a loss, so "
            "prune_to_budget needs the loss to train it with. Received: loss=None"
        )
    if optimizer is None:
        optimizer = _rebuilt_optimizer(settings.get("optimizer"))
    kwargs = {name: settings[name] for name in _CARRIED if settings.get(name) is not None}
    for name in ("metrics", "weighted_metrics"):
        if settings.get(name) is not None:
            kwargs[name] = _rebuilt_metrics(settings[name], name)
    copy.compile(optimizer=optimizer, loss=loss, **kwargs)


def _compiled_with(model: keras.Model) -> dict:
    """The arguments `model.compile` received, as live objects; `{}` if uncompiled."""
    if not getattr(model, "compiled", False):
        return {}
    settings = keras_internals.compile_arguments(model)
    if settings is not None:
        return settings
    # A trainer without Keras's record of its compile() call: what it exposes.
    return {"optimizer": getattr(model, "optimizer", None), "loss": getattr(model, "loss", None)}


def _rebuilt_optimizer(optimizer: object) -> object:
    """A new optimizer like `optimizer` (an instance serves one model), else `"adam"`."""
    if optimizer is None:
        return "adam"
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer  # a name, which compile() resolves afresh
    try:
        return optimizer.__class__.from_config(optimizer.get_config())
    except Exception as error:  # a custom optimizer may fail in any way
        raise ValueError(
            "Invalid value for argument `optimizer`: the model's optimizer "
            f"{type(optimizer).__name__} cannot be rebuilt from its config ({error}); pass "
            f"`optimizer=`. Received: optimizer=None"
        ) from error


def _rebuilt_metrics(metrics: object, name: str) -> object:
    """`metrics` (a list, dict or nested lists) with each `Metric` instance rebuilt."""
    if isinstance(metrics, dict):
        return {key: _rebuilt_metrics(value, name) for key, value in metrics.items()}
    if isinstance(metrics, (list, tuple)):
        rebuilt = [_rebuilt_metrics(metric, name) for metric in metrics]
        return [metric for metric in rebuilt if metric is not None]
    if not isinstance(metrics, keras.metrics.Metric):
        return metrics  # a name or a function: stateless, used as it is
    try:
        return metrics.__class__.from_config(metrics.get_config())
    except Exception as error:  # a custom Metric's config may fail in any way
        warnings.warn(
            f"The {name} entry {metrics.name!r} ({type(metrics).__name__}) cannot be rebuilt "
            f"from its config ({type(error).__name__}: {error}); the pruned copy is trained "
            "without it.",
            stacklevel=3,
        )
        return None


def compiled_loss(model: keras.Model) -> object:
    """The loss `model` was compiled with, or `None`."""
    return _compiled_with(model).get("loss")
