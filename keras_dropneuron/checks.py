"""Argument checks shared by every public function, class and the CLI.

One bad value gets one exception type and one wording wherever it is passed:
a value of the wrong type raises `TypeError`, a value of the right type that is
out of range raises `ValueError`, both in the Keras wording

    Invalid type for argument `threshold`: expected a float. Received: threshold='0.1' of type str
    Invalid value for argument `li`: expected a finite float >= 0. Received: li=-1

Every check takes the argument's name first and returns the value normalised to a
plain Python value (a `float`, an `int`, a `bool`, a `list` or a `tuple`), ready
for a flat `get_config()`.
"""

import argparse
import math
import numbers
from collections.abc import Callable, Collection

import keras
import numpy as np

from keras_dropneuron import keras_internals

SUPPORTED_MODEL_KINDS = "a Sequential or Functional keras.Model (nested ones included)"


def described(value: object, limit: int = 200) -> str:
    """`repr(value)` for messages: arrays by shape and dtype, long texts cut at `limit`."""
    if getattr(value, "shape", None) and hasattr(value, "dtype"):  # not a numpy scalar
        return f"<{type(value).__name__} of shape {tuple(value.shape)}, dtype {value.dtype}>"
    if isinstance(value, list | tuple) and any(hasattr(item, "shape") for item in value):
        items = ", ".join(described(item, limit // 4) for item in value[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"({items}{more})" if isinstance(value, tuple) else f"[{items}{more}]"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid_type(name: str, expected: str, value: object) -> TypeError:
    """The `TypeError` for `value` of argument `name`, which should be `expected`."""
    return TypeError(
        f"Invalid type for argument `{name}`: expected {expected}. "
        f"Received: {name}={described(value)} of type {type(value).__name__}"
    )


def invalid_value(name: str, expected: str, value: object) -> ValueError:
    """The `ValueError` for `value` of argument `name`, which should be `expected`."""
    return ValueError(
        f"Invalid value for argument `{name}`: expected {expected}. "
        f"Received: {name}={described(value)}"
    )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def check_bool(name: str, value: object) -> bool:
    """Returns `value` as a `bool` after checking it is `True` or `False`.

    Raises:
        TypeError: If `value` is not a bool (`0`, `1` and `"yes"` are not).
    """
    if not isinstance(value, bool | np.bool_):
        raise invalid_type(name, "a bool", value)
    return bool(value)


def check_non_negative_float(name: str, value: object) -> float:
    """Returns `value` as a `float` after checking it is a finite number >= 0.

    Raises:
        TypeError: If `value` is not a real number (a `str` or a `bool` is not).
        ValueError: If `value` is negative, NaN or infinite.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise invalid_type(name, "a float", value)
    if not math.isfinite(value) or value < 0:
        raise invalid_value(name, "a finite float >= 0", value)
    return float(value)


def check_int(
    name: str, value: object, minimum: int, alternatives: tuple[str, ...] = ()
) -> int | str:
    """Returns `value` as an `int` after checking it is an int >= `minimum`.

    Args:
        name: The argument's name.
        value: The value to check.
        minimum: The smallest value allowed.
        alternatives: Strings allowed as they are, such as `"epoch"`.
            Defaults to `()`.

    Raises:
        TypeError: If `value` is not an int (a `bool` or `2.0` is not) nor, with
            `alternatives`, a str.
        ValueError: If `value` is below `minimum`, or a str not in `alternatives`.
    """
    expected = " or ".join([repr(a) for a in alternatives] + [f"an int >= {minimum}"])
    if alternatives and isinstance(value, str):
        if value not in alternatives:
            raise invalid_value(name, expected, value)
        return value
    if not _is_int(value):
        raise invalid_type(name, expected, value)
    if value < minimum:
        raise invalid_value(name, expected, value)
    return int(value)


def check_choice(name: str, value: object, choices: Collection[str]) -> str:
    """Returns `value` after checking it is one of `choices` (strings).

    Raises:
        TypeError: If `value` is not a str.
        ValueError: If `value` is a str but not one of `choices`.
    """
    expected = f"one of {tuple(choices)}"
    if not isinstance(value, str):
        raise invalid_type(name, expected, value)
    if value not in choices:
        raise invalid_value(name, expected, value)
    return value


def check_sequence_of(
    name: str, value: object, types: type | tuple[type, ...], expected: str
) -> list:
    """Returns `value` as a list after checking it is a collection of `types`.

    A list, tuple, set, range or 1-D numpy array passes. A `str` is refused even
    when its characters would pass, so `layers="h1"` does not become
    `["h", "1"]`, and so is a single number.

    Args:
        name: The argument's name.
        value: The value to check.
        types: A type or tuple of types every item must have.
        expected: What was expected, for the message, e.g. `"a list of floats"`.

    Raises:
        TypeError: If `value` is not such a collection, or holds an item that
            is not one of `types`.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist() if value.ndim == 1 else value
    if not isinstance(value, list | tuple | range | set | frozenset):
        raise invalid_type(name, expected, value)
    items = list(value)
    if not all(isinstance(item, types) for item in items):
        raise invalid_type(name, expected, value)
    return items


def check_layers(
    name: str, value: object, names_only: bool = False
) -> list[str | keras.layers.Layer] | None:
    """Returns `None` or a list of layer names (or layers) for a `layers=` argument.

    Whether every name is a supported layer of the model is checked later, once
    the model is known (see `model_utils.select_layers`).

    Args:
        name: The argument's name.
        value: `None`, or a list of layer names or layers.
        names_only: Whether only names are allowed (so that the owner's config
            stays JSON-friendly). Defaults to `False`.

    Raises:
        TypeError: If `value` is a single name or layer (the message says to pass
            a list), or holds anything else.
    """
    if value is None:
        return None
    types = str if names_only else (str, keras.layers.Layer)
    expected = "None or a list of layer names" + ("" if names_only else " or layers")
    if isinstance(value, str | keras.layers.Layer):
        single = value if isinstance(value, str) else value.name
        expected += f"; to select one layer, pass a list: {name}=[{single!r}]"
    return check_sequence_of(name, value, types, expected)


def check_axis(name: str, value: object) -> tuple[int, ...]:
    """Returns `value` as a tuple of ints: the unit axes of a weight.

    What is checked here is what holds for every weight: ints, at least one,
    no axis named twice (`(0, 0)`, `(-1, -1)`). Whether the axes lie within the
    weight's rank, and stay distinct once negative axes are resolved (`(1, -1)`
    on a 2-D kernel), waits for the weight: a regularizer may sit on a weight of
    any rank (`EinsumDense` kernels, custom layers), so see `check_axis_for`.

    Raises:
        TypeError: If `value` is not an int or a non-empty tuple or list of ints.
        ValueError: If an axis is named twice.
    """
    axes = (value,) if _is_int(value) else value
    expected = "an int or a non-empty tuple of ints"
    if not isinstance(axes, tuple | list) or not axes or not all(_is_int(a) for a in axes):
        raise invalid_type(name, expected, value)
    axes = tuple(int(a) for a in axes)
    if len(set(axes)) != len(axes):
        raise invalid_value(name, "distinct axes", value)
    return axes


def check_axis_for(name: str, axes: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """Returns `axes` resolved to non-negative axes of a weight of `shape`.

    Raises:
        ValueError: If an axis is out of range for `shape`, or two axes name the
            same axis of it. The message names the argument and the shape.
    """
    rank = len(shape)
    resolved = tuple(a % rank for a in axes if -rank <= a < rank)
    if len(resolved) != len(axes) or len(set(resolved)) != len(resolved):
        received = axes[0] if len(axes) == 1 else axes
        raise ValueError(
            f"Invalid value for argument `{name}`: expected distinct axes within a "
            f"weight of rank {rank}, from {-rank} to {rank - 1}. Received: "
            f"{name}={received!r} for a weight of shape {tuple(shape)}"
        )
    return resolved


def check_keras_model(name: str, value: object) -> keras.Model:
    """Returns `value` after checking it is a `keras.Model` of any kind.

    Raises:
        TypeError: If `value` is not a `keras.Model` (a layer is not).
    """
    if not isinstance(value, keras.Model):
        raise invalid_type(name, "a keras.Model", value)
    return value


def check_model(name: str, value: object) -> keras.Model:
    """Returns `value` after checking it is a built Sequential or Functional model.

    Raises:
        TypeError: If `value` is not a `keras.Model`.
        ValueError: If it is subclassed (no inspectable graph) or not built.
    """
    if not isinstance(value, keras.Model):
        raise invalid_type(name, SUPPORTED_MODEL_KINDS, value)
    if not keras_internals.is_graph_model(value):
        raise ValueError(
            f"Unsupported model for argument `{name}`: subclassed models such as "
            f"{type(value).__name__} have no inspectable graph. Expected "
            f"{SUPPORTED_MODEL_KINDS}."
        )
    if not value.built:
        raise ValueError(
            f"Invalid value for argument `{name}`: the model is not built yet, so "
            "it has no weights. Build it first, e.g. with `keras.Input` or "
            "`model.build(input_shape)`."
        )
    return value


def check_callable(name: str, value: object) -> Callable:
    """Returns `value` after checking it can be called.

    Raises:
        TypeError: If `value` is not callable.
    """
    if not callable(value):
        raise invalid_type(name, "a callable", value)
    return value


def argparse_type(
    option: str, check: Callable, convert: Callable = float, **kwargs: object
) -> Callable[[str], object]:
    """Turns a check into an argparse `type=` for `option`, with the same wording.

    The command line then reports `argument --threshold: expected a finite float
    >= 0. Received: --threshold=-1.0`, the message the Python API gives for
    `threshold=-1.0`.

    Args:
        option: The option, e.g. `"--threshold"`.
        check: A check of this module, e.g. `check_non_negative_float`.
        convert: Parses the text: `float` or `int`. Defaults to `float`.
        **kwargs: Further arguments of `check`, e.g. `minimum=1`.

    Example:

    >>> parser.add_argument(
    ...     "--threshold", type=argparse_type("--threshold", check_non_negative_float)
    ... )
    """
    kind = {float: "a float", int: "an int"}.get(convert, convert.__name__)

    def parse(text: str) -> object:
        try:
            value = convert(text)
        except ValueError:
            error = invalid_type(option, kind, text)
        else:
            try:
                return check(option, value, **kwargs)
            except (TypeError, ValueError) as raised:
                error = raised
        # argparse prefixes "argument --option: "; keep "expected ... Received: ...".
        raise argparse.ArgumentTypeError(str(error).split(": ", 1)[1]) from None

    parse.__name__ = f"{option.lstrip('-').replace('-', '_')}_type"
    return parse
