"""The frontier's grid: parsing `KEY=V1,V2` axes into configurations, and their names.

A configuration is a dict `{"penalties": {...}, "auto_threshold": float | None}`,
with `"finetune_epochs"` and `"training"` (the options of `methods.OPTIONS`)
only where the grid gives them, so that a configuration without them keeps
its label and point file.
"""

import itertools

from keras_dropneuron.checks import check_non_negative_float
from keras_dropneuron.experiments import methods
from keras_dropneuron.experiments.setups import SETUPS

# Grid keys besides the set-up's penalty strengths (`runner.run_once` arguments,
# and the training methods of `methods.OPTIONS`).
OPTIONS = ("auto_threshold", "finetune_epochs", *methods.OPTIONS)

# A small grid per experiment for `keras-dropneuron frontier` without `--grid`.
DEFAULT_GRIDS = {
    "lenet-300-100": ["li+lo=2e-4,3e-4,4e-4", "auto_threshold=0"],
    "autoencoder": ["li+lo+output_lo=2e-6,3e-6,6e-6"],
    "lenet-5": ["li+lo=3e-4,5e-4,1e-3"],
    "lenet-5-caffe": ["li+lo+conv_li+conv_lo=1e-3,1.5e-3,2e-3"],
    "sparse-regression": ["li+lo=0.03,0.1,0.3"],
}


def parse_grid(name: str, specs: list[str]) -> list[dict]:
    """Returns the configurations of a grid: the product of its axes.

    Args:
        name: Experiment name (a key of `SETUPS`).
        specs: Strings `KEY=V1,V2,...`; `KEY` is a penalty strength of the
            set-up (`li`, `lo`, ...) or one of `OPTIONS`, and `KEY1+KEY2=...`
            gives several keys the same value.

    Returns:
        A list of dicts `{"penalties": {...}, "auto_threshold": float | None}`,
        with `"finetune_epochs"` and `"training"` where the grid gives them.

    Raises:
        ValueError: For an unknown experiment, a malformed spec, an unknown or
            repeated key, or a value that is not a finite float >= 0.

    Example:

    >>> parse_grid("lenet-300-100", ["li+lo=2e-4,4e-4", "auto_threshold=0"])
    """
    if name not in SETUPS:
        raise ValueError(
            f"Invalid argument `name`: expected one of {sorted(SETUPS)}. Received: {name!r}"
        )
    known = set(SETUPS[name].penalties) | set(OPTIONS)
    axes, seen = [], set()
    for spec in specs:
        keys, numbers = _parse_axis(name, spec, known, seen)
        axes.append([dict.fromkeys(keys, v) for v in numbers])
    return [_config(combination) for combination in itertools.product(*axes)]


def _parse_axis(name: str, spec: str, known: set, seen: set) -> tuple[list[str], list[float]]:
    """The keys and values of one `KEY1+KEY2=V1,V2` axis; adds its keys to `seen`."""
    keys, sep, values = str(spec).partition("=")
    keys = [k.strip() for k in keys.split("+")]
    if not sep or not all(keys) or not values.strip():
        raise ValueError(f"Invalid grid axis: expected KEY=V1,V2,... Received: {spec!r}")
    for key in keys:
        if key not in known:
            raise ValueError(
                f"Invalid grid key for experiment {name!r}: expected one of "
                f"{sorted(known)}. Received: {key!r}"
            )
        if key in seen:
            raise ValueError(f"Invalid grid: the key {key!r} is given twice")
        seen.add(key)
    numbers = [
        check_non_negative_float(f"grid[{'+'.join(keys)}]", float(v))
        for v in _floats(spec, values)
    ]
    whole = {"finetune_epochs", *methods.WHOLE} & set(keys)
    if whole and any(v != int(v) for v in numbers):
        raise ValueError(f"Invalid grid: {sorted(whole)} must be whole numbers: {spec!r}")
    return keys, numbers


def _config(combination: tuple[dict, ...]) -> dict:
    """One configuration from one value of every axis."""
    merged = {k: v for part in combination for k, v in part.items()}
    auto = merged.pop("auto_threshold", None)
    config = {"penalties": merged, "auto_threshold": auto}
    if "finetune_epochs" in merged:
        config["finetune_epochs"] = int(merged.pop("finetune_epochs"))
    training = {k: merged.pop(k) for k in methods.OPTIONS if k in merged}
    if training:
        config["training"] = methods.check_training(training, auto)
    return config


def _floats(spec: str, values: str) -> list[float]:
    try:
        return [float(v) for v in values.split(",")]
    except ValueError:
        raise ValueError(
            f"Invalid grid axis: values must be numbers. Received: {spec!r}"
        ) from None


def _number(value: float) -> str:
    """`value` in 6 significant digits, or all of them where 6 would name another number."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def config_label(config: dict) -> str:
    """A short, stable name of a configuration.

    Args:
        config: A configuration of `parse_grid`.

    Returns:
        Its keys and values, e.g. `"li=0.0002,lo=0.0002,auto=0"`, or
        `"defaults"` for an empty one.

    Example:

    >>> config_label({"penalties": {"li": 2e-4}, "auto_threshold": 0.0})
    'li=0.0002,auto=0'
    """
    parts = [f"{k}={_number(v)}" for k, v in sorted(config["penalties"].items())]
    if config.get("auto_threshold") is not None:
        parts.append(f"auto={_number(config['auto_threshold'])}")
    if config.get("finetune_epochs") is not None:
        parts.append(f"ft={config['finetune_epochs']}")
    parts += [f"{k}={_number(v)}" for k, v in sorted(config.get("training", {}).items())]
    return ",".join(parts) or "defaults"


def point_id(name: str, config: dict, seed: int, epochs: int, quick: bool) -> str:
    """The file stem of one run: experiment, configuration, epochs, seed.

    Args:
        name: Experiment name.
        config: A configuration of `parse_grid`.
        seed: The run's seed.
        epochs: The run's epochs.
        quick: Whether the run is a quick one (a `_quick` suffix).

    Returns:
        The stem, e.g. `"lenet-300-100_li=0.0002_e100_seed0"`.
    """
    tail = "_quick" if quick else ""
    return f"{name}_{config_label(config)}_e{epochs}_seed{seed}{tail}".replace(",", "_")
