"""Train, prune, slim and report one experiment; aggregate over seeds."""

import itertools
import json
import pathlib
import time

import keras
import numpy as np

from keras_dropneuron.callbacks import PruneCallback
from keras_dropneuron.checks import check_non_negative_float
from keras_dropneuron.experiments import methods, timing
from keras_dropneuron.experiments.setups import SETUPS
from keras_dropneuron.layer_rules import rule_for
from keras_dropneuron.proximal import ProximalGroupShrinkage
from keras_dropneuron.pruning import prune_weights
from keras_dropneuron.regularize import regularize_model
from keras_dropneuron.report import sparsity_report
from keras_dropneuron.surgery import slim_model
from keras_dropneuron.threshold import choose_threshold

METHODS = ("threshold", "proximal")
QUICK_SAMPLES = 256
VALIDATION_FRACTION = 0.1  # held out of the training data by `auto_threshold`


def score(metric, y_true, y_pred):
    """The experiment's metric: error in %, NMSE or MSE (lower is better)."""
    y_pred = np.asarray(y_pred, dtype="float64")
    y_true = np.asarray(y_true)
    if metric == "error":
        return 100.0 * float(np.mean(np.argmax(y_pred, axis=-1) != y_true))
    y_true = y_true.astype("float64").reshape(y_pred.shape)
    mse = float(np.mean(np.square(y_pred - y_true)))
    return mse / float(np.mean(np.square(y_true))) if metric == "nmse" else mse


def check_penalties(name, penalties):
    """Returns `penalties` as a dict of floats after checking its keys and values."""
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


def _alive_units(setup, report, model, slim):
    """Alive units per `setup.units` entry, from the sparsity report.

    Heads are counted by the attention rule, the units of layers the report
    has no row for from the slim model (what the surgeon kept).
    """
    rows = {row["layer"]: row for row in report.to_list()}
    units = []
    for label, layer, side in setup.units:
        row = rows.get(layer)
        if side == "heads":
            # The surgeon's own test (with every head dead it keeps one).
            before = model.get_layer(layer)
            alive = int(np.sum(~rule_for(before).dead_heads(before, 0.0)))
            total = before.num_heads
        elif row is None:
            before, after = model.get_layer(layer), slim.get_layer(layer)
            if side == "inputs":
                alive, total = after.input.shape[-1], before.input.shape[-1]
            else:
                alive, total = after.output.shape[-1], before.output.shape[-1]
        elif side == "inputs":
            alive, total = row["inputs_alive"], row["inputs"]
        else:
            alive, total = row["units_alive"], row["units"]
        units.append({"label": label, "alive": int(alive), "total": int(total)})
    return units


def _proximal_steps(model, penalties):
    """The proximal callbacks: `prox_li` / `prox_lo`, and `prox_input_lo` on the first layer."""
    strengths = {"li": penalties["prox_li"], "lo": penalties["prox_lo"]}
    if penalties.get("prox_input_lo") is None:
        return [ProximalGroupShrinkage(**strengths)]
    # The pixels' own proximal strength: the first layer's rows apart.
    first, *middle = [layer.name for layer in model.layers if layer.weights][:-1]
    steps = [ProximalGroupShrinkage(strengths["li"], penalties["prox_input_lo"], layers=[first])]
    return steps + ([ProximalGroupShrinkage(**strengths, layers=middle)] if middle else [])


def _compile(model, setup, optimizer):
    model.compile(optimizer, setup.loss, steps_per_execution=setup.steps_per_execution)


def run_once(
    name,
    variant,
    seed,
    method="threshold",
    quick=False,
    epochs=None,
    mnist=None,
    verbose=2,
    penalties=None,
    auto_threshold=None,
    finetune_epochs=None,
    training=None,
):
    """Runs one experiment end to end and returns its figures as a dict.

    Trains with the DropNeuron penalties and `PruneCallback` (or proximal group
    shrinkage with `method="proximal"`), slims the pruned model with
    `slim_model`, checks that the slim model scores exactly as the pruned one,
    and measures the slim model's inference speed-up.

    With `auto_threshold=tolerance` (a float), the last `VALIDATION_FRACTION` of
    the training data is held out, and after training the units whose norms lie
    below the largest threshold that loses at most `tolerance` on it
    (`choose_threshold` in `"neuron"` mode) are pruned before fine-tuning.
    `finetune_epochs` overrides the set-up's (`None`: the set-up's); they are
    part of `epochs`, not added to it. `training` holds the method options of
    `keras_dropneuron.experiments.methods` (learning-rate schedule, optimizer,
    warm-up, prune-and-retrain cycles, reweighting); `None` is the set-up's recipe.
    """
    setup = SETUPS[name]
    keras.utils.set_random_seed(seed)
    (x, y), (x_test, y_test), extra = setup.load(seed, mnist)
    epochs = epochs or setup.epochs
    if quick:
        x, y, x_test, y_test = (a[:QUICK_SAMPLES] for a in (x, y, x_test, y_test))
        epochs = 1
    overrides = check_penalties(name, penalties)
    penalties = {**setup.penalties, **overrides}
    training = methods.check_training(training, auto_threshold)
    if training.get("proximal"):
        method = "proximal"
    cycles = int(training.get("cycles", 1))
    learning_rate = training.get("learning_rate", setup.learning_rate)
    if auto_threshold is not None:
        cut = int(len(x) * (1 - VALIDATION_FRACTION))
        x, y, x_val, y_val = x[:cut], y[:cut], x[cut:], y[cut:]
    callbacks = [
        PruneCallback(setup.threshold, mode=setup.prune_mode, keep_last_unit=setup.keep_last_unit)
    ]
    if variant == "unpenalized":
        callbacks = []  # the reference: the same training, nothing pruned
    elif method == "proximal":
        # Adam's steps do not scale with the gradient, so the proximal step
        # has its own strengths rather than the penalties' ones.
        callbacks = [PruneCallback(0.0)]  # counts and reports the exact zeros
        # No penalty on top of the proximal step (it *is* the penalty's step).
        penalties = {k: v if k.startswith("prox_") else 0.0 for k, v in penalties.items()}
    if variant != "unpenalized":
        if training.get("ramp_epochs"):
            callbacks.append(methods.PenaltyRamp(training["ramp_epochs"]))
        if training.get("reweight"):
            callbacks.append(methods.ReweightedGroupLasso())
    model = setup.build(variant, penalties)
    if method == "proximal" and variant != "unpenalized":
        callbacks[:0] = _proximal_steps(model, penalties)
    if finetune_epochs is None:
        finetune_epochs = setup.finetune_epochs
    finetune = 0 if quick else min(finetune_epochs, epochs - 1)
    steps = -(-len(x) // setup.batch_size)
    _compile(model, setup, methods.optimizer(training, learning_rate, steps * (epochs - finetune)))
    chosen = None
    start = time.perf_counter()
    # Prune-and-retrain cycles: the penalized epochs in `cycles` parts, the
    # automatic threshold after each (one part, pruned once, without the option).
    bounds = np.unique(np.linspace(0, epochs - finetune, cycles + 1).round().astype(int))
    for first, last in itertools.pairwise(bounds):
        model.fit(
            x,
            y,
            initial_epoch=int(first),
            epochs=int(last),
            batch_size=setup.batch_size,
            callbacks=callbacks,
            verbose=verbose,
        )
        if auto_threshold is not None:
            chosen, _ = choose_threshold(
                model,
                x_val,
                y_val,
                tolerance=auto_threshold,
                mode="neuron",
                score=lambda t, p: score(setup.metric, t, p),
            )
            if chosen:
                prune_weights(model, chosen, mode="neuron")
    if finetune:
        # Retrain the survivors without penalties (the penalties shrink every
        # weight a little), usually at a lower learning rate; PruneCallback(0.0)
        # holds the pruned weights at zero.
        model = regularize_model(model)
        rate = learning_rate * setup.finetune_lr_factor
        _compile(model, setup, methods.optimizer(training, rate, steps * finetune))
        model.fit(
            x,
            y,
            epochs=finetune,
            batch_size=setup.batch_size,
            callbacks=[PruneCallback(0.0)],
            verbose=verbose,
        )
    train_seconds = time.perf_counter() - start

    pruned_pred = model.predict(x_test, batch_size=256, verbose=0)
    # Dead input features go too (the paper counts them as pruned); the slim
    # model then reads only the kept columns of the data.
    slim, slim_report = slim_model(model, drop_inputs=True, return_report=True)
    (kept,) = slim_report.kept_inputs.values()
    x_slim = x_test[..., kept]
    slim_pred = slim.predict(x_slim, batch_size=256, verbose=0)
    deviation = float(np.max(np.abs(slim_pred - pruned_pred)))
    pruned_score = score(setup.metric, y_test, pruned_pred)
    slim_score = score(setup.metric, y_test, slim_pred)
    report = sparsity_report(model)
    totals = slim_report.totals()
    speed = timing.inference_speedup(
        model, slim, x_test[:256], x_slim[:256], repeats=5 if quick else 15
    )
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
        setup.metric: pruned_score,
        "slim_" + setup.metric: slim_score,
        "slim_max_abs_deviation": deviation,
        "slim_matches": bool(
            deviation <= 1e-5 * (1 + float(np.max(np.abs(pruned_pred))))
            or abs(slim_score - pruned_score) <= 1e-9
        ),
        "compression": report.totals["compression"],
        "units": _alive_units(setup, report, model, slim),
        "params": totals["params_before"],
        "slim_params": totals["params_after"],
        "inputs_kept": int(len(kept)),
        "macs": totals["macs_before"],
        "slim_macs": totals["macs_after"],
        "speedup": speed["speedup"],
        "original_ms": speed["original_ms"],
        "slim_ms": speed["slim_ms"],
        "train_seconds": train_seconds,
    }
    if auto_threshold is not None:
        result["auto_threshold_tolerance"] = auto_threshold
        result["chosen_threshold"] = chosen
    if "support" in extra:
        kept = np.flatnonzero(np.any(model.get_layer("hidden").kernel.numpy() != 0, axis=1))
        result["support_true"] = extra["support"].tolist()
        result["support_found"] = kept.tolist()
        result["support_exact"] = bool(np.array_equal(kept, extra["support"]))
    return result, model


def summarize(results):
    """Groups results by experiment, variant, method and penalty overrides.

    Returns one row per group: the metric's mean, median and worst, and the
    means of the other figures; where the experiment has an `"unpenalized"`
    variant, `gap` is the difference of the means to it.
    """
    groups = {}
    for r in results:
        overrides = ", ".join(f"{k}={v:g}" for k, v in sorted(r.get("penalties", {}).items()))
        method = f"{r['method']} ({overrides})" if overrides else r["method"]
        groups.setdefault((r["experiment"], r["variant"], method), []).append(r)
    rows = []
    for (name, variant, method), runs in groups.items():
        metric = SETUPS[name].metric
        values = np.array([r[metric] for r in runs])
        units = [
            f"{np.mean([r['units'][i]['alive'] for r in runs]):.0f}/{runs[0]['units'][i]['total']}"
            for i in range(len(runs[0]["units"]))
        ]
        row = {
            "experiment": name,
            "variant": variant,
            "method": method,
            "seeds": len(runs),
            "metric": metric,
            "mean": float(values.mean()),
            "median": float(np.median(values)),
            "worst": float(values.max()),
            "compression": float(np.mean([r["compression"] for r in runs])),
            "units": " - ".join(units),
            "slim_params": float(np.mean([r["slim_params"] for r in runs])),
            "params": runs[0]["params"],
            "slim_macs": float(np.mean([r["slim_macs"] for r in runs])),
            "macs": runs[0]["macs"],
            "speedup": float(np.median([r["speedup"] for r in runs])),
            "slim_exact": all(r["slim_matches"] for r in runs),
        }
        if "support_exact" in runs[0]:
            row["support_exact"] = f"{sum(r['support_exact'] for r in runs)}/{len(runs)}"
        paper = SETUPS[name].paper.get(variant) or SETUPS[name].paper.get("dropneuron", {})
        row["paper"] = paper
        rows.append(row)
    # The error gap to the same recipe without penalties (mean over seeds).
    reference = {r["experiment"]: r["mean"] for r in rows if r["variant"] == "unpenalized"}
    for row in rows:
        if row["experiment"] in reference and row["variant"] != "unpenalized":
            row["gap"] = row["mean"] - reference[row["experiment"]]
    return rows


def _fmt(metric, value):
    return f"{value:.2f}%" if metric == "error" else f"{value:.3g}"


def markdown_table(rows):
    """The side-by-side table: our figures next to the paper's."""
    lines = [
        "| experiment | variant | method | seeds | metric (mean / median / worst) | paper "
        "| compression (paper) | units alive (paper) | slim params | slim MACs | speed-up "
        "| slim exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = r["paper"]
        metric = r["metric"]
        extra = f"; support {r['support_exact']}" if "support_exact" in r else ""
        if "gap" in r:
            extra += f"; {r['gap']:+.2f} vs unpenalized"
        lines.append(
            f"| {r['experiment']} | {r['variant']} | {r['method']} | {r['seeds']} "
            f"| {metric} {_fmt(metric, r['mean'])} / {_fmt(metric, r['median'])} / "
            f"{_fmt(metric, r['worst'])}{extra} "
            f"| {_fmt(metric, paper[metric]) if metric in paper else '-'} "
            f"| {r['compression']:.1f}x ({paper.get('compression', '-')}x) "
            f"| {r['units']} ({paper.get('units', '-')}) "
            f"| {r['slim_params']:,.0f} / {r['params']:,} "
            f"| {r['slim_macs']:,.0f} / {r['macs']:,} "
            f"| {r['speedup']:.2f}x | {'yes' if r['slim_exact'] else 'NO'} |"
        )
    return "\n".join(lines)


def reproduce(
    names,
    seeds=(0,),
    methods=("threshold",),
    quick=False,
    epochs=None,
    mnist=None,
    out=None,
    plots=False,
    verbose=2,
    auto_threshold=None,
    penalties=None,
):
    """Runs experiments over seeds and methods, writes JSON and Markdown, returns rows.

    `auto_threshold`, `penalties`: see `run_once`.
    """
    for name in names:
        check_penalties(name, penalties)
    results = []
    out = pathlib.Path(out) if out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for name in names:
        setup = SETUPS[name]
        for variant in setup.variants:
            for method in (
                methods if variant not in ("baseline", "unpenalized") else ("threshold",)
            ):
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
                        from keras_dropneuron.experiments import plots as plotting

                        stem = f"{name}_{variant}_{method}".replace("+", "_")
                        plotting.plot_sparsity_patterns(model, out / f"{stem}_weights.png")
                    if out:  # write as we go: long runs keep what they finished
                        (out / "results.json").write_text(json.dumps(results, indent=2))
    rows = summarize(results)
    table = markdown_table(rows)
    print(table)
    if out:
        (out / "summary.json").write_text(json.dumps(rows, indent=2))
        (out / "results.md").write_text(table + "\n")
        if plots:
            from keras_dropneuron.experiments import plots as plotting

            plotting.plot_alive_units(results, out / "alive_units.png")
    return rows, results
