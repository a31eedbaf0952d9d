"""Train, prune, slim and report one experiment; run experiments over seeds.

`run_once` is the pipeline of one run, in named steps: load the data
(`_load`), build the model with its callbacks (`_callbacks`), train with the
method, pruning at the automatic threshold after each part, and fine-tune
(`_train`), then slim, verify and time the slim model
(`measure.slim_and_measure`). `reproduce` runs it over experiments, variants,
methods and seeds and writes the tables of `summary`.
"""

import itertools
import json
import pathlib
import time
from typing import NamedTuple

import keras
import numpy as np

from keras_dropneuron.callbacks import PruneCallback
from keras_dropneuron.checks import check_non_negative_float
from keras_dropneuron.experiments import measure, methods
from keras_dropneuron.experiments.setups import SETUPS, Setup
from keras_dropneuron.experiments.summary import markdown_table, summarize
from keras_dropneuron.pruning import prune_weights
from keras_dropneuron.regularize import regularize_model
from keras_dropneuron.threshold import choose_threshold

METHODS = ("threshold", "proximal")
QUICK_SAMPLES = 256
VALIDATION_FRACTION = 0.1  # held out of the training data by `auto_threshold`


class _Data(NamedTuple):
    """The arrays of one run; `x_val`, `y_val` are `None` without `auto_threshold`."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    extra: dict


def check_penalties(name: str, penalties: dict | None) -> dict:
    """Checks penalty overrides against an experiment's strengths.

    Args:
        name: Experiment name (a key of `SETUPS`).
        penalties: Overrides `{strength: value}`, or `None`.

    Returns:
        The overrides as a dict of floats.

    Raises:
        ValueError: For a key that is not one of the set-up's strengths, or a
            value that is not a finite float >= 0.
        TypeError: For a value that is not a number.
    """
    penalties = dict(penalties or {})
    known = SETUPS[name].penalties
    for key, value in penalties.items():
        if key not in known:
            raise ValueError(
                f"Invalid key in argument `penalties` for experiment {name!r}: expected "
                f"one of {sorted(known)}. Received: {key!r}"
            )
        penalties[key] = check_non_negative_float(f"penalties[{key!r}]", value)
    return penalties


def _load(setup: Setup, seed: int, mnist: str | None, quick: bool, auto_threshold) -> _Data:
    """The run's data: quick mode's first samples, `auto_threshold`'s validation split."""
    (x, y), (x_test, y_test), extra = setup.load(seed, mnist)
    if quick:
        x, y, x_test, y_test = (a[:QUICK_SAMPLES] for a in (x, y, x_test, y_test))
    x_val = y_val = None
    if auto_threshold is not None:
        cut = int(len(x) * (1 - VALIDATION_FRACTION))
        x, y, x_val, y_val = x[:cut], y[:cut], x[cut:], y[cut:]
    return _Data(x, y, x_val, y_val, x_test, y_test, extra)


def _penalties(setup: Setup, variant: str, method: str, overrides: dict) -> dict:
    """The set-up's strengths with the overrides; under `"proximal"` only the `prox_` ones."""
    penalties = {**setup.penalties, **overrides}
    if method == "proximal" and variant != "unpenalized":
        # No penalty on top of the proximal step (it *is* the penalty's step).
        penalties = {k: v if k.startswith("prox_") else 0.0 for k, v in penalties.items()}
    return penalties


def _callbacks(
    setup: Setup, variant: str, method: str, training: dict
) -> list[keras.callbacks.Callback]:
    """The penalized phase's callbacks, but the proximal steps (they need the model)."""
    if variant == "unpenalized":
        return []  # the reference: the same training, nothing pruned
    if method == "proximal":
        callbacks = [PruneCallback(0.0)]  # counts and reports the exact zeros
    else:
        callbacks = [
            PruneCallback(
                setup.threshold, mode=setup.prune_mode, keep_last_unit=setup.keep_last_unit
            )
        ]
    if training.get("ramp_epochs"):
        callbacks.append(methods.PenaltyRamp(training["ramp_epochs"]))
    if training.get("reweight"):
        callbacks.append(methods.ReweightedGroupLasso())
    return callbacks


def _compile(model: keras.Model, setup: Setup, optimizer: keras.optimizers.Optimizer) -> None:
    model.compile(optimizer, setup.loss, steps_per_execution=setup.steps_per_execution)


def _fit(model: keras.Model, setup: Setup, data: _Data, callbacks: list, **kwargs) -> None:
    model.fit(data.x, data.y, batch_size=setup.batch_size, callbacks=callbacks, **kwargs)


def _prune_at_automatic_threshold(
    model: keras.Model, setup: Setup, data: _Data, tolerance: float
) -> float:
    """Prunes the units below the largest threshold that loses at most `tolerance`.

    The threshold is `choose_threshold`'s in `"neuron"` mode on the held-out
    validation data.

    Returns:
        The chosen threshold (`0.0`: nothing pruned).
    """
    chosen, _ = choose_threshold(
        model,
        data.x_val,
        data.y_val,
        tolerance=tolerance,
        mode="neuron",
        score=lambda t, p: measure.score(setup.metric, t, p),
    )
    if chosen:
        prune_weights(model, chosen, mode="neuron")
    return chosen


def _train(
    model: keras.Model,
    setup: Setup,
    data: _Data,
    callbacks: list,
    training: dict,
    epochs: int,
    finetune: int,
    auto_threshold: float | None,
    verbose: int,
) -> tuple[keras.Model, float | None]:
    """Trains with the method: the penalized epochs, then `finetune` epochs without penalties.

    The penalized epochs are split into `training["cycles"]` parts (one
    without the option), each followed by pruning at the automatic threshold
    when `auto_threshold` is given: prune-and-retrain cycles.

    Returns:
        The trained model (a new one after fine-tuning) and the last chosen
        threshold (`None` without `auto_threshold`).
    """
    learning_rate = training.get("learning_rate", setup.learning_rate)
    steps = -(-len(data.x) // setup.batch_size)
    penalized = epochs - finetune
    _compile(model, setup, methods.optimizer(training, learning_rate, steps * penalized))
    chosen = None
    cycles = int(training.get("cycles", 1))
    bounds = np.unique(np.linspace(0, penalized, cycles + 1).round().astype(int))
    for first, last in itertools.pairwise(bounds):
        _fit(
            model,
            setup,
            data,
            callbacks,
            initial_epoch=int(first),
            epochs=int(last),
            verbose=verbose,
        )
        if auto_threshold is not None:
            chosen = _prune_at_automatic_threshold(model, setup, data, auto_threshold)
    if finetune:
        # Retrain the survivors without penalties (the penalties shrink every
        # weight a little), usually at a lower learning rate; PruneCallback(0.0)
        # holds the pruned weights at zero.
        model = regularize_model(model)
        rate = learning_rate * setup.finetune_lr_factor
        _compile(model, setup, methods.optimizer(training, rate, steps * finetune))
        _fit(model, setup, data, [PruneCallback(0.0)], epochs=finetune, verbose=verbose)
    return model, chosen


def run_once(
    name: str,
    variant: str,
    seed: int,
    method: str = "threshold",
    quick: bool = False,
    epochs: int | None = None,
    mnist: str | None = None,
    verbose: int = 2,
    penalties: dict | None = None,
    auto_threshold: float | None = None,
    finetune_epochs: int | None = None,
    training: dict | None = None,
) -> tuple[dict, keras.Model]:
    """Runs one experiment end to end and returns its figures and its pruned model.

    Trains with the DropNeuron penalties and `PruneCallback` (or proximal group
    shrinkage with `method="proximal"`), slims the pruned model with
    `slim_model`, checks that the slim model computes the pruned one's outputs,
    and measures the slim model's inference speed-up.

    Args:
        name: Experiment name (a key of `SETUPS`).
        variant: One of the set-up's `variants`.
        seed: Random seed of the weights, the data order and the data.
        method: `"threshold"` (penalties and `PruneCallback`) or `"proximal"`.
            Defaults to `"threshold"`.
        quick: Train 1 epoch on the first `QUICK_SAMPLES` samples, test on as
            many, without fine-tuning. Defaults to `False`.
        epochs: Training epochs, fine-tuning included; `None` is the set-up's.
            Defaults to `None`.
        mnist: Path of a local `mnist.npz`. Defaults to `None`.
        verbose: Keras `fit` verbosity. Defaults to `2`.
        penalties: Overrides of the set-up's strengths (see `check_penalties`).
            Defaults to `None`.
        auto_threshold: A tolerance: the last `VALIDATION_FRACTION` of the
            training data is held out, and after training the units whose
            norms lie below the largest threshold that loses at most the
            tolerance on it (`choose_threshold` in `"neuron"` mode) are pruned
            before fine-tuning. Defaults to `None` (off).
        finetune_epochs: Fine-tuning epochs, part of `epochs`; `None` is the
            set-up's. Defaults to `None`.
        training: Method options of `keras_dropneuron.experiments.methods`
            (learning-rate schedule, optimizer, warm-up, prune-and-retrain
            cycles, reweighting); `None` is the set-up's recipe. Defaults to
            `None`.

    Returns:
        `(result, model)`: the figures as a dict of JSON values, and the
        trained, pruned (not slimmed) model.

    Raises:
        ValueError, TypeError: For bad `penalties` or `training` (checked
            before anything is loaded).

    Example:

    >>> result, model = run_once("lenet-300-100", "dropneuron", seed=0, quick=True)
    """
    setup = SETUPS[name]
    overrides = check_penalties(name, penalties)
    training = methods.check_training(training, auto_threshold)
    if training.get("proximal"):
        method = "proximal"
    keras.utils.set_random_seed(seed)
    data = _load(setup, seed, mnist, quick, auto_threshold)
    epochs = 1 if quick else (epochs or setup.epochs)
    if finetune_epochs is None:
        finetune_epochs = setup.finetune_epochs
    finetune = 0 if quick else min(finetune_epochs, epochs - 1)
    penalties = _penalties(setup, variant, method, overrides)
    callbacks = _callbacks(setup, variant, method, training)
    model = setup.build(variant, penalties)
    if method == "proximal" and variant != "unpenalized":
        callbacks[:0] = methods.proximal_steps(model, penalties)
    start = time.perf_counter()
    model, chosen = _train(
        model, setup, data, callbacks, training, epochs, finetune, auto_threshold, verbose
    )
    train_seconds = time.perf_counter() - start
    result = {
        "experiment": name,
        "variant": variant,
        "method": method if auto_threshold is None else f"{method}+auto",
        "penalties": overrides,
        "training": training,
        "seed": seed,
        "epochs": epochs,
        "finetune_epochs": finetune,
        "quick": quick,
        **measure.slim_and_measure(model, setup, data.x_test, data.y_test, quick),
        "train_seconds": train_seconds,
    }
    if auto_threshold is not None:
        result["auto_threshold_tolerance"] = auto_threshold
        result["chosen_threshold"] = chosen
    if "support" in data.extra:
        result.update(measure.support_figures(model, data.extra["support"]))
    return result, model


def _grid(names: list[str], methods: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """`(name, variant, method)` of every run; the reference variants train one way only."""
    return [
        (name, variant, method)
        for name in names
        for variant in SETUPS[name].variants
        for method in (methods if variant not in ("baseline", "unpenalized") else ("threshold",))
    ]


def _plotting():
    from keras_dropneuron.experiments import plots  # matplotlib only when asked for

    return plots


def reproduce(
    names: list[str],
    seeds: tuple[int, ...] = (0,),
    methods: tuple[str, ...] = ("threshold",),
    quick: bool = False,
    epochs: int | None = None,
    mnist: str | None = None,
    out: str | pathlib.Path | None = None,
    plots: bool = False,
    verbose: int = 2,
    auto_threshold: float | None = None,
    penalties: dict | None = None,
) -> tuple[list[dict], list[dict]]:
    """Runs experiments over variants, methods and seeds; writes JSON and Markdown.

    With `out`, writes `results.json` (every run, rewritten after each so a
    long run keeps what it finished), `summary.json` and `results.md` (the
    rows of `summary.summarize` and their table), and with `plots` the
    sparsity pattern of each configuration's first seed and `alive_units.png`.

    Args:
        names: Experiment names (keys of `SETUPS`).
        seeds: Seeds to run. Defaults to `(0,)`.
        methods: Methods of `METHODS` to run on the penalized variants (the
            `"baseline"` and `"unpenalized"` ones run `"threshold"` only).
            Defaults to `("threshold",)`.
        quick: See `run_once`. Defaults to `False`.
        epochs: See `run_once`. Defaults to `None`.
        mnist: See `run_once`. Defaults to `None`.
        out: Output folder, created if missing; `None` writes nothing.
            Defaults to `None`.
        plots: Whether to draw figures into `out` (needs matplotlib).
            Defaults to `False`.
        verbose: See `run_once`. Defaults to `2`.
        auto_threshold: See `run_once`. Defaults to `None`.
        penalties: See `run_once`; checked for every experiment first.
            Defaults to `None`.

    Returns:
        `(rows, results)`: the summary rows and every run's result.
    """
    for name in names:
        check_penalties(name, penalties)
    results = []
    out = pathlib.Path(out) if out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for name, variant, method in _grid(names, methods):
        for seed in seeds:
            print(f"== {name} / {variant} / {method} / seed {seed}", flush=True)
            result, model = run_once(
                name,
                variant,
                seed,
                method,
                quick,
                epochs,
                mnist,
                verbose,
                penalties=penalties,
                auto_threshold=auto_threshold,
            )
            results.append(result)
            if out and plots and seed == seeds[0]:
                stem = f"{name}_{variant}_{method}".replace("+", "_")
                _plotting().plot_sparsity_patterns(model, out / f"{stem}_weights.png")
            if out:  # write as we go: long runs keep what they finished
                (out / "results.json").write_text(json.dumps(results, indent=2))
    rows = summarize(results)
    table = markdown_table(rows)
    print(table)
    if out:
        (out / "summary.json").write_text(json.dumps(rows, indent=2))
        (out / "results.md").write_text(table + "\n")
        if plots:
            _plotting().plot_alive_units(results, out / "alive_units.png")
    return rows, results
