"""A GPT-2-style language model of the Python standard library, pruned to half its multiply-adds.

Beyond the paper and outside `SETUPS` (the runner feeds one input array; a
keras-hub causal LM takes token ids and a padding mask, and keras-hub is an
optional dependency, imported only when `run` is called). The corpus is this
interpreter's own standard library (`stdlib_corpus`), nothing is downloaded.

`run` trains the model without penalties to a baseline, then from those
weights trains two models for the same epochs and schedule: the reference (no
penalties) and the pruning run. The pruning run puts `regularize_model`'s
penalties on the feed-forward units of the blocks and trains with
`BudgetCallback(target_macs=..., stop_on_target=True)`, which stops that
training as soon as the slim model meets the budget (by `target_epoch`); the
steps left fine-tune the survivors without penalties (a new Adam, the same rate
schedule from the step reached). The budget counts the uniform slim model,
where the widest block sets every block's width, so at the target
`refill_blocks` gives the narrower blocks dead units back up to that width
(function unchanged: their output rows start at zero), which costs no
multiply-adds; `HoldZeros` keeps every other pruned weight at zero. The
pruned model is slimmed both ways (`widths="uniform"`: a `GPT2CausalLM`;
`"per_layer"`: a Functional model) and measured: validation perplexity,
parameters, multiply-adds, `.keras` file sizes and greedy decoding speed.
Only feed-forward units are penalized and removed (`heads=0.0`): at uniform
widths GPT-2's blocks keep their heads, whose size they derive from
`hidden_dim // num_heads`.
"""

import dataclasses
import json
import pathlib
import tempfile
import time

import keras
import numpy as np

from keras_dropneuron.experiments import stdlib_corpus

NAME = "stdlib-lm"


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """The corpus, model and training recipe of one run.

    Attributes:
        max_chars: Characters of source read (`load_stdlib_corpus`).
        vocabulary_size: SentencePiece pieces.
        sequence_length: Tokens per training window.
        num_layers, hidden_dim, intermediate_dim, num_heads: The GPT-2 backbone.
        batch_size: Training batch size.
        baseline_epochs: Epochs without penalties before pruning.
        epochs: Epochs of the pruning run (and of the reference, from the same start).
        learning_rate: Peak Adam rate of the baseline (cosine decay to a tenth).
        finetune_learning_rate: Peak rate of the pruning run and the reference.
        li, lo: Penalty strengths on the feed-forward units (scaled by the budget).
        target_macs: `BudgetCallback`'s fraction of multiply-adds to keep.
        target_epoch: The epoch by which the budget plans to reach it;
            training stops with the penalties when it is reached, and the
            steps left fine-tune the survivors without penalties.
        frequency: Training batches between `BudgetCallback`'s events.
        refill: Whether `refill_blocks` revives, at the target, dead units of
            the narrower blocks up to the widest block's width (the uniform
            slim model's), which costs no multiply-adds.
        prompt_batch, prompt_length, new_tokens: The greedy decoding benchmark.
    """

    max_chars: int = 1_500_000
    vocabulary_size: int = 2048
    sequence_length: int = 128
    num_layers: int = 4
    hidden_dim: int = 128
    intermediate_dim: int = 512
    num_heads: int = 4
    batch_size: int = 32
    baseline_epochs: int = 3
    epochs: int = 6
    learning_rate: float = 2e-3
    finetune_learning_rate: float = 5e-4
    li: float = 1e-3
    lo: float = 1e-3
    target_macs: float = 0.5
    target_epoch: int = 1
    frequency: int = 20
    refill: bool = True
    prompt_batch: int = 8
    prompt_length: int = 32
    new_tokens: int = 64


FULL = LMConfig()
QUICK = LMConfig(
    max_chars=60_000,
    vocabulary_size=400,
    sequence_length=32,
    num_layers=2,
    hidden_dim=32,
    intermediate_dim=128,
    num_heads=2,
    batch_size=16,
    baseline_epochs=1,
    epochs=2,
    frequency=10,
    li=1e-3,
    lo=1e-3,
    prompt_batch=2,
    prompt_length=8,
    new_tokens=8,
)


def build_causal_lm(config: LMConfig) -> keras.Model:
    """A `GPT2CausalLM` without preprocessor (it takes token ids), dropout off."""
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=config.vocabulary_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        hidden_dim=config.hidden_dim,
        intermediate_dim=config.intermediate_dim,
        dropout=0.0,
        max_sequence_length=config.sequence_length + config.new_tokens,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def _inputs(windows: np.ndarray) -> dict:
    ids = windows[:, :-1]
    return {"token_ids": ids, "padding_mask": np.ones_like(ids, dtype=bool)}


def mean_nll(model: keras.Model, windows: np.ndarray, batch_size: int = 64) -> float:
    """Mean next-token negative log-likelihood (nats) over every target of `windows`."""
    total = 0.0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        logits = np.asarray(model.predict_on_batch(_inputs(batch)), dtype="float64")
        top = logits.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(logits - top).sum(axis=-1)) + top[..., 0]
        picked = np.take_along_axis(logits, batch[:, 1:, None], axis=-1)[..., 0]
        total += float((log_z - picked).sum())
    return total / (len(windows) * (windows.shape[1] - 1))


def _schedule(rate: float, steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """A short warm-up to `rate`, then cosine decay to a tenth of it over `steps` steps."""
    warmup = max(1, steps // 20)
    return keras.optimizers.schedules.CosineDecay(
        0.0, steps - warmup, alpha=0.1, warmup_target=rate, warmup_steps=warmup
    )


class _Continued(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule` from step `start` on: a new optimizer resumes another's schedule."""

    def __init__(self, schedule, start: int):
        self.schedule, self.start = schedule, start

    def __call__(self, step):
        return self.schedule(step + self.start)

    def get_config(self) -> dict:
        return {"schedule": self.schedule.get_config(), "start": self.start}


def _train(model, windows, epochs, rate, config, callbacks=(), verbose=0, schedule=None) -> float:
    """Adam with a short warm-up and cosine decay to a tenth; returns the seconds taken.

    `schedule` replaces the rate schedule (by default `rate` over `epochs` of `windows`).
    """
    if schedule is None:
        schedule = _schedule(rate, epochs * -(-len(windows) // config.batch_size))
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start = time.perf_counter()
    model.fit(
        _inputs(windows),
        windows[:, 1:],
        batch_size=config.batch_size,
        epochs=epochs,
        callbacks=list(callbacks),
        verbose=verbose,
    )
    return time.perf_counter() - start


def _feed_forwards(model: keras.Model) -> list[tuple]:
    """`(intermediate, output)` Dense layers of each transformer block, in order."""
    blocks = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if hasattr(layer, "_feedforward_intermediate_dense")
    ]
    blocks.sort(key=lambda layer: int(layer.name.rsplit("_", 1)[-1]))
    return [(b._feedforward_intermediate_dense, b._feedforward_output_dense) for b in blocks]


def _live_units(model: keras.Model) -> list[np.ndarray]:
    """Per block, the feed-forward units with a non-zero input column and output row."""
    return [
        np.flatnonzero(
            np.any(np.asarray(up.kernel) != 0, axis=0)
            & np.any(np.asarray(down.kernel) != 0, axis=1)
        )
        for up, down in _feed_forwards(model)
    ]


def refill_blocks(model: keras.Model, source: keras.Model) -> list[np.ndarray]:
    """Revives dead feed-forward units up to the widest block's width; their indices per block.

    The uniform slim model gives every block the width of the widest, so a
    block with fewer live units carries dead ones at no saving. Each block
    gets back that many of its dead units whose output row is zero (the
    strongest in `source`, by input norm times output norm): their input
    column and bias are copied from `source`, their output row stays zero,
    so the model computes exactly what it did, and fine-tuning trains them.
    """
    live = _live_units(model)
    width = max(map(len, live))
    revived = []
    pairs = zip(_feed_forwards(model), _feed_forwards(source), live, strict=True)
    for (up, down), (up0, down0), alive in pairs:
        kernel, bias = np.asarray(up.kernel).copy(), np.asarray(up.bias).copy()
        out_zero = np.flatnonzero(~np.any(np.asarray(down.kernel) != 0, axis=1))
        strength = np.linalg.norm(np.asarray(up0.kernel), axis=0) * np.linalg.norm(
            np.asarray(down0.kernel), axis=1
        )
        chosen = out_zero[np.argsort(-strength[out_zero], kind="stable")][: width - len(alive)]
        kernel[:, chosen] = np.asarray(up0.kernel)[:, chosen]
        bias[chosen] = np.asarray(up0.bias)[chosen]
        up.kernel.assign(kernel)
        up.bias.assign(bias)
        revived.append(chosen)
    return revived


class HoldZeros(keras.callbacks.Callback):
    """Puts the zeros of the blocks' feed-forward kernels back after every training batch.

    Every kernel entry that is zero when built stays zero, except the output
    rows of the units in `free` (per block, the units `refill_blocks` revived).
    (A `PruneCallback` counts every zero weight as pruned: it would hold those
    rows at zero too.)
    """

    def __init__(self, model: keras.Model, free: list[np.ndarray] | None = None):
        super().__init__()
        self.masks = []
        for index, (up, down) in enumerate(_feed_forwards(model)):
            down_mask = np.asarray(down.kernel) != 0
            if free is not None:
                down_mask[free[index]] = True
            up_mask = np.asarray(up.kernel) != 0
            for variable, mask in ((up.kernel, up_mask), (down.kernel, down_mask)):
                self.masks.append((variable, mask.astype(variable.dtype)))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        for variable, mask in self.masks:
            variable.assign(variable * mask)


def _prompts(windows: np.ndarray, config: LMConfig) -> np.ndarray:
    return windows[: config.prompt_batch, : config.prompt_length]


def generate_speed(model, prompts: np.ndarray, new_tokens: int, repeats: int = 3):
    """Greedy `generate()` (keras-hub's cached decoding): tokens/s and the new ids.

    The first call compiles and is not timed; the speed is the best of `repeats`.
    """
    batch, length = prompts.shape
    ids = np.zeros((batch, length + new_tokens), dtype="int32")
    ids[:, :length] = prompts
    mask = np.zeros(ids.shape, dtype=bool)
    mask[:, :length] = True
    inputs = {"token_ids": ids, "padding_mask": mask}
    model.generate(inputs, stop_token_ids=None)  # compiles
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = model.generate(inputs, stop_token_ids=None)
        best = min(best, time.perf_counter() - start)
    return batch * new_tokens / best, np.asarray(out["token_ids"])[:, length:]


def decode_speed(model, prompts: np.ndarray, new_tokens: int):
    """Greedy decoding by whole forward passes (no cache; any model): tokens/s and the ids.

    The input has its final shape from the first step (later positions
    masked and unseen by causal attention), so one compiled function serves
    every step; the first step, which compiles, is not timed.
    """
    batch, length = prompts.shape
    ids = np.zeros((batch, length + new_tokens), dtype="int32")
    ids[:, :length] = prompts
    inputs = {"token_ids": ids, "padding_mask": np.ones(ids.shape, dtype=bool)}
    model.predict_on_batch(inputs)
    start = time.perf_counter()
    for step in range(length, length + new_tokens):
        logits = np.asarray(model.predict_on_batch(inputs))
        ids[:, step] = logits[:, step - 1].argmax(-1)
    return batch * new_tokens / (time.perf_counter() - start), ids[:, length:].copy()


def block_widths(model: keras.Model) -> list[int]:
    """The `intermediate_dim` of each transformer block, in order."""
    return [
        layer.intermediate_dim
        for layer in model._flatten_layers(include_self=False)
        if hasattr(layer, "intermediate_dim") and not isinstance(layer, keras.Model)
    ]


def _file_size(model: keras.Model, folder: pathlib.Path, stem: str) -> int:
    """Bytes of `model` saved as `.keras` without optimizer state (a `.keras` file keeps it)."""
    compiled = getattr(model, "optimizer", None) is not None
    bare = type(model).from_config(model.get_config()) if compiled else model
    if bare is not model:
        bare.set_weights(model.get_weights())
    path = folder / f"{stem}.keras"
    bare.save(path)
    return path.stat().st_size


def count_macs(model: keras.Model) -> int:
    """Multiply-adds per token, as the budget counts them.

    Embedding lookups and the tied output projection count 0, so these are the blocks'.
    """
    from keras_dropneuron import SlimReport

    return int(SlimReport.compare(model, model).totals()["macs_before"])


def _model_figures(model, source, windows, folder, stem, full_macs) -> dict:
    """Perplexity, parameters, multiply-adds, widths, file size; exactness against `source`."""
    nll = mean_nll(model, windows)
    macs = count_macs(model)
    batch = _inputs(windows[:8])
    deviation = np.abs(
        np.asarray(model.predict_on_batch(batch)) - np.asarray(source.predict_on_batch(batch))
    ).max()
    return {
        "val_nll": nll,
        "val_perplexity": float(np.exp(nll)),
        "params": int(model.count_params()),
        "macs": macs,
        "macs_ratio": macs / full_macs,
        "block_widths": block_widths(model),
        "keras_bytes": _file_size(model, folder, stem),
        "max_logit_deviation": float(deviation),
    }


def run(
    quick: bool = False,
    seed: int = 0,
    epochs: int | None = None,
    out: str | pathlib.Path | None = None,
    verbose: int = 0,
) -> tuple[dict, dict]:
    """Trains, prunes to the budget, slims both ways and measures; see the module docstring.

    Args:
        quick: The tiny `QUICK` configuration (seconds, for tests) instead of `FULL`.
            Defaults to `False`.
        seed: Seed of the weights and the order of the windows. Defaults to `0`.
        epochs: Epochs of the pruning run and the reference; `None` is the
            configuration's. Defaults to `None`.
        out: Folder for `results.json`, `results.md`, `tokenizer.model` and
            the `.keras` files; `None` writes them to a temporary folder
            removed afterwards. Defaults to `None`.
        verbose: Keras `fit` verbosity. Defaults to `0`.

    Returns:
        `(result, artifacts)`: the figures as JSON values, and `models`
        (`baseline`, `reference`, `pruned`, `uniform`, `per_layer`), the
        `validation` windows and the tokenizer `proto`.
    """
    from keras_dropneuron import BudgetCallback, regularize_model, slim_model

    config = QUICK if quick else FULL
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    keras.utils.set_random_seed(seed)
    corpus = stdlib_corpus.load_stdlib_corpus(config.max_chars)
    proto = stdlib_corpus.train_tokenizer(corpus.train, config.vocabulary_size)
    train = stdlib_corpus.token_windows(
        stdlib_corpus.encode(proto, corpus.train), config.sequence_length
    )
    # keras-hub's fit feeds a tf.data pipeline, which ignores `shuffle`: shuffle once here.
    train = train[np.random.default_rng(seed).permutation(len(train))]
    validation = stdlib_corpus.token_windows(
        stdlib_corpus.encode(proto, corpus.validation), config.sequence_length
    )

    baseline = build_causal_lm(config)
    seconds = {
        "baseline": _train(
            baseline, train, config.baseline_epochs, config.learning_rate, config, verbose=verbose
        )
    }
    baseline_nll = mean_nll(baseline, validation)

    reference = build_causal_lm(config)
    reference.set_weights(baseline.get_weights())
    rate = config.finetune_learning_rate
    seconds["reference"] = _train(reference, train, config.epochs, rate, config, verbose=verbose)

    # The pruning run: penalties until the slim model meets the budget, then (a new
    # optimizer, no penalties) fine-tuning along the same schedule for the steps left.
    # Feed-forward units only: the uniform slim model (the `GPT2CausalLM` class) keeps
    # GPT-2's heads, so a head penalty would only cost capacity.
    penalized = regularize_model(baseline, li=config.li, lo=config.lo, heads=0.0)
    budget = BudgetCallback(
        target_macs=config.target_macs,
        on_target="release",
        stop_on_target=True,
        frequency=config.frequency,
        target_epoch=config.target_epoch,
    )
    steps_per_epoch = -(-len(train) // config.batch_size)
    schedule = _schedule(rate, config.epochs * steps_per_epoch)
    seconds["pruned"] = _train(
        penalized, train, config.epochs, rate, config, [budget], verbose, schedule
    )
    done = int(penalized.optimizer.iterations.numpy())
    pruned = build_causal_lm(config)  # the same weights without the penalties
    pruned.set_weights(penalized.get_weights())
    revived = None
    if budget.reached and done < config.epochs * steps_per_epoch:
        if config.refill:
            revived = refill_blocks(pruned, baseline)
        epoch, batch = divmod(done, steps_per_epoch)
        rest = np.concatenate(
            [train[batch * config.batch_size :]] + [train] * (config.epochs - epoch - 1)
        )
        seconds["pruned"] += _train(
            pruned,
            rest,
            1,
            rate,
            config,
            [HoldZeros(pruned, revived)],
            verbose,
            _Continued(schedule, done),
        )
    optimizer = getattr(pruned, "optimizer", None)
    finetune_steps = int(optimizer.iterations.numpy()) if optimizer is not None else 0

    uniform = slim_model(pruned)
    per_layer = slim_model(pruned, widths="per_layer")

    folder = pathlib.Path(out) if out else pathlib.Path(tempfile.mkdtemp())
    folder.mkdir(parents=True, exist_ok=True)
    models = {
        "baseline": baseline,
        "reference": reference,
        "pruned": pruned,
        "uniform": uniform,
        "per_layer": per_layer,
    }
    full_macs = count_macs(baseline)
    figures = {
        name: _model_figures(
            model,
            models["pruned"] if name in ("uniform", "per_layer") else model,
            validation,
            folder,
            name,
            full_macs,
        )
        for name, model in models.items()
    }
    prompts = _prompts(validation, config)
    speed = {}
    for name in ("pruned", "uniform"):
        speed[f"generate_{name}"], _ = generate_speed(models[name], prompts, config.new_tokens)
    tokens = {}
    for name in ("pruned", "uniform", "per_layer"):
        speed[f"decode_{name}"], tokens[name] = decode_speed(
            models[name], prompts, config.new_tokens
        )
    (folder / "tokenizer.model").write_bytes(proto)

    result = {
        "experiment": NAME,
        "quick": quick,
        "seed": seed,
        "config": dataclasses.asdict(config),
        "corpus": corpus.info(),
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
        "train_windows": len(train),
        "validation_windows": len(validation),
        "validation_tokens": int(len(validation) * config.sequence_length),
        "models": figures,
        "budget": {
            "reached_epoch": budget.reached_epoch,
            "reached_step": done if budget.reached else None,
            "finetune_steps": finetune_steps,
            "revived_units": [len(units) for units in revived] if revived else None,
            "ratios": {k: float(v) for k, v in budget.ratios.items()},
            "final_scale": float(budget.scale),
        },
        "speed_tokens_per_s": speed,
        "greedy_tokens_identical": all(
            np.array_equal(tokens["pruned"], tokens[name]) for name in ("uniform", "per_layer")
        ),
        "sample": stdlib_corpus.decode(proto, tokens["pruned"][0]),
        "train_seconds": seconds,
    }
    result["baseline_val_perplexity"] = float(np.exp(baseline_nll))
    if out:
        (folder / "results.json").write_text(json.dumps(result, indent=2))
        (folder / "results.md").write_text(markdown_table(result) + "\n")
    return result, {"models": models, "validation": validation, "proto": proto}


def markdown_table(result: dict) -> str:
    """One row per model: perplexity, parameters, multiply-adds, widths, size, speed."""
    figures, speed = result["models"], result["speed_tokens_per_s"]
    reference = figures["reference"]["val_perplexity"]
    lines = [
        "| model | val perplexity | vs reference | params | MACs/token | MACs ratio "
        "| FFN widths | .keras bytes | generate() tok/s | no-cache decode tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in figures.items():
        lines.append(
            f"| {name} | {row['val_perplexity']:.3f} "
            f"| {row['val_perplexity'] / reference - 1:+.1%} | {row['params']:,} "
            f"| {row['macs']:,} | {row['macs_ratio']:.3f} "
            f"| {'-'.join(map(str, row['block_widths']))} | {row['keras_bytes']:,} "
            f"| {speed.get(f'generate_{name}', float('nan')):.0f} "
            f"| {speed.get(f'decode_{name}', float('nan')):.0f} |"
        )
    return "\n".join(lines)
